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
            self.register_buffer("semantic_centroids", torch.zeros(config.semantic_id_levels, n_codes, TEXT_DIM))
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
        item_text, item_semantic by item code; semantic_centroids)."""
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
        return self.combine(id_vectors, self.item_category[items], self.item_seller[items],
                            self.item_attributes[items] if self.config.item_attributes else None,
                            self.item_text[items].float() if self.config.item_text else None,
                            self.item_semantic[items] if self.config.semantic_id_levels else None)

    def embed_content(self, category: torch.Tensor, seller: torch.Tensor, attributes: torch.Tensor,
                      text: torch.Tensor) -> torch.Tensor:
        """(B, d) unit vectors of items the model has no id for, from their content alone: (B,) category and
        seller codes, (B, A) attribute codes (0 pads), (B, 384) sentence-encoder vectors (zeros: no text). What
        the service embeds an item added live with (content_tower.onnx)."""
        text = text.half().float()  # rounded as the tower's own text buffer is, so both paths agree
        id_vectors = torch.zeros(category.shape[0], self.item_embedding.embedding_dim, device=text.device)
        return self.combine(id_vectors, category, seller, attributes if self.config.item_attributes else None,
                            text if self.config.item_text else None,
                            self.semantic_codes(text) if self.config.semantic_id_levels else None)

    def content_alignment(self, items: torch.Tensor) -> torch.Tensor:
        """Mean (1 - cosine) between the content-only vectors of the known ones of `items` and their full vectors
        (held fixed): trains the content path to place an item where its id would."""
        unique = torch.unique(items)
        unique = unique[self.item_seen[unique] > 0]
        if len(unique) == 0:
            return torch.zeros((), device=items.device)
        parts = (self.item_category[unique], self.item_seller[unique],
                 self.item_attributes[unique] if self.config.item_attributes else None,
                 self.item_text[unique].float() if self.config.item_text else None,
                 self.item_semantic[unique] if self.config.semantic_id_levels else None)
        full = self.combine(self.item_embedding(unique), *parts).detach()
        content_only = self.combine(torch.zeros_like(full), *parts)
        return (1.0 - (content_only * full).sum(-1)).mean()

    def semantic_codes(self, text: torch.Tensor) -> torch.Tensor:
        """(B, 384) text vectors -> (B, levels) rows of the semantic embedding: the nearest centroid at each
        level of the residual k-means the codes were fitted with (training/semantic_ids.py); 0 without text."""
        residual, rows = text, []
        n_codes = self.semantic_centroids.shape[1]
        for level, centroids in enumerate(self.semantic_centroids):  # (K, 384)
            distances = (centroids * centroids).sum(-1) - 2 * residual @ centroids.T  # (B, K), up to |r|^2
            nearest = distances.argmin(-1)
            rows.append(1 + level * n_codes + nearest)
            residual = residual - centroids[nearest]
        has_text = (text != 0).any(-1, keepdim=True)
        return torch.stack(rows, -1) * has_text

    def combine(self, id_vectors: torch.Tensor, category: torch.Tensor, seller: torch.Tensor,
                attributes: torch.Tensor | None, text: torch.Tensor | None,
                semantic: torch.Tensor | None) -> torch.Tensor:
        """(..., d) unit vectors from an item's parts, each (...) or (..., n) by item; None: not in this tower."""
        summed = id_vectors + self.category_embedding(category) + self.seller_embedding(seller)
        if attributes is not None:
            count = (attributes > 0).sum(-1, keepdim=True).clamp(min=1)
            summed = summed + self.attribute_embedding(attributes).sum(-2) / count
        if text is not None:
            summed = summed + self.text_projection(text)
        if semantic is not None:
            summed = summed + self.semantic_embedding(semantic).sum(-2)
        return F.normalize(self.mlp(summed), dim=-1)

    @property
    def n_items(self) -> int:
        return self.item_embedding.num_embeddings
