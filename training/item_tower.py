"""The item tower: item id + category + seller (+ content) embeddings -> MLP -> L2-normalised retrieval vector.

The same tower embeds item tokens for the encoders and builds the ANN index, so both live in one space.
Side information is kept as buffers indexed by item code, so the exported graph takes item codes only.

Content (ModelConfig.item_attributes / item_text / semantic_id_levels, issue 25) is summed in beside the id: a
mean bag of attribute embeddings, the frozen sentence encoder's text vector through a linear map, and one learned
embedding per semantic-id code. An item with no training events has no trained id embedding, so the tower leaves
it out (`item_seen`) and the item is known by its content alone; `id_dropout` trains the content for that case.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.config import ModelConfig
from training.text_encoder import TEXT_DIM


class ItemTower(nn.Module):
    def __init__(self, config: ModelConfig, sizes: dict[str, int]):
        super().__init__()
        dim, n_items = config.dim, sizes["items"]
        self.config = config
        self.item_embedding = nn.Embedding(n_items, dim, padding_idx=0)
        self.category_embedding = nn.Embedding(sizes["categories"], dim, padding_idx=0)
        self.seller_embedding = nn.Embedding(sizes["sellers"], dim, padding_idx=0)
        self.register_buffer("item_category", torch.zeros(n_items, dtype=torch.long))
        self.register_buffer("item_seller", torch.zeros(n_items, dtype=torch.long))
        embeddings = [self.item_embedding, self.category_embedding, self.seller_embedding]
        if config.item_content:
            self.register_buffer("item_seen", torch.ones(n_items))  # 1: the id embedding has trained
        if config.item_attributes:
            self.attribute_embedding = nn.Embedding(sizes["attributes"], dim, padding_idx=0)
            self.register_buffer("item_attributes", torch.zeros(n_items, sizes["max_attributes"], dtype=torch.long))
            embeddings.append(self.attribute_embedding)
        if config.item_text:
            self.register_buffer("item_text", torch.zeros(n_items, TEXT_DIM, dtype=torch.float16))  # unit vectors
            self.text_projection = nn.Linear(TEXT_DIM, dim, bias=False)
        if config.semantic_id_levels:
            # Code c of level l is row 1 + l * K + c; row 0 is "no code" (an item without text).
            n_codes = sizes["semantic_codes"]
            self.semantic_embedding = nn.Embedding(1 + config.semantic_id_levels * n_codes, dim, padding_idx=0)
            self.register_buffer("item_semantic", torch.zeros(n_items, config.semantic_id_levels, dtype=torch.long))
            embeddings.append(self.semantic_embedding)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        for embedding in embeddings:
            nn.init.normal_(embedding.weight, std=0.05)
        # With default biases the small embeddings barely move the MLP's output: every item started at nearly
        # the same vector (mean cosine 0.99), and training spent its first epochs pulling them apart.
        for layer in (self.mlp[0], self.mlp[2]):
            nn.init.zeros_(layer.bias)

    def set_side_info(self, side_info: dict[str, torch.Tensor]) -> None:
        """Copy in the buffers named in `side_info` (item_category, item_seller, item_seen, item_attributes,
        item_text, item_semantic), each indexed by item code."""
        for name, values in side_info.items():
            getattr(self, name).copy_(values)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """(...) item codes -> (..., dim) unit vectors."""
        if self.training:
            # A batch repeats the same items many times (tokens, positives, negatives): embed each once.
            unique, inverse = torch.unique(items, return_inverse=True)
            return self.embed(unique)[inverse]
        return self.embed(items)

    def embed(self, items: torch.Tensor) -> torch.Tensor:
        id_vectors = self.item_embedding(items)
        if self.config.item_content:
            keep = self.item_seen[items]
            if self.training and self.config.id_dropout:
                keep = keep * (torch.rand_like(keep) >= self.config.id_dropout)
            id_vectors = id_vectors * keep[..., None]
        summed = (id_vectors + self.category_embedding(self.item_category[items])
                  + self.seller_embedding(self.item_seller[items]))
        if self.config.item_attributes:
            attributes = self.item_attributes[items]  # (..., A)
            count = (attributes > 0).sum(-1, keepdim=True).clamp(min=1)
            summed = summed + self.attribute_embedding(attributes).sum(-2) / count
        if self.config.item_text:
            summed = summed + self.text_projection(self.item_text[items].float())
        if self.config.semantic_id_levels:
            summed = summed + self.semantic_embedding(self.item_semantic[items]).sum(-2)
        return F.normalize(self.mlp(summed), dim=-1)

    @property
    def n_items(self) -> int:
        return self.item_embedding.num_embeddings
