"""The item tower: item id + category + seller embeddings -> MLP -> L2-normalised retrieval vector.

The same tower embeds item tokens for the encoders and builds the ANN index, so both live in one space.
Side information is kept as buffers indexed by item code, so the exported graph takes item codes only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ItemTower(nn.Module):
    def __init__(self, n_items: int, n_categories: int, n_sellers: int, dim: int):
        super().__init__()
        self.item_embedding = nn.Embedding(n_items, dim, padding_idx=0)
        self.category_embedding = nn.Embedding(n_categories, dim, padding_idx=0)
        self.seller_embedding = nn.Embedding(n_sellers, dim, padding_idx=0)
        self.register_buffer("item_category", torch.zeros(n_items, dtype=torch.long))
        self.register_buffer("item_seller", torch.zeros(n_items, dtype=torch.long))
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        for embedding in (self.item_embedding, self.category_embedding, self.seller_embedding):
            nn.init.normal_(embedding.weight, std=0.05)
        # With default biases the small embeddings barely move the MLP's output: every item started at nearly
        # the same vector (mean cosine 0.99), and training spent its first epochs pulling them apart.
        for layer in (self.mlp[0], self.mlp[2]):
            nn.init.zeros_(layer.bias)

    def set_side_info(self, category: torch.Tensor, seller: torch.Tensor) -> None:
        self.item_category.copy_(category.long())
        self.item_seller.copy_(seller.long())

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """(...) item codes -> (..., dim) unit vectors."""
        if self.training:
            # A batch repeats the same items many times (tokens, positives, negatives): embed each once.
            unique, inverse = torch.unique(items, return_inverse=True)
            return self.embed(unique)[inverse]
        return self.embed(items)

    def embed(self, items: torch.Tensor) -> torch.Tensor:
        summed = (self.item_embedding(items) + self.category_embedding(self.item_category[items])
                  + self.seller_embedding(self.item_seller[items]))
        return F.normalize(self.mlp(summed), dim=-1)

    @property
    def n_items(self) -> int:
        return self.item_embedding.num_embeddings
