"""BERT4Rec (Sun et al., 2019): bidirectional softmax self-attention over the acted items; training masks
`mask_prob` of them and predicts them; at inference the query token is the mask appended after the history."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from contract.tokens import CONTEXT_TOKEN
from training.config import ModelConfig
from training.item_tower import ItemTower
from training.pairs import Pairs
from training.transformer import TransformerStack, is_item


class BERT4RecEncoder(nn.Module):
    def __init__(self, config: ModelConfig, sizes: dict[str, int], item_tower: ItemTower):
        super().__init__()
        self.config = config
        self.item_tower = item_tower
        self.mask_embedding = nn.Parameter(torch.randn(config.dim))
        self.stack = TransformerStack(config.dim, config.n_heads, config.n_layers, config.max_len, config.dropout)

    def encode(self, f: dict[str, torch.Tensor], masked: torch.Tensor) -> torch.Tensor:
        """masked (B, T) bool: positions whose input is the mask embedding."""
        items = self.item_tower(f["item"]) * self.config.dim**0.5  # scaled as SASRec scales by sqrt(d)
        return self.stack(torch.where(masked[..., None], self.mask_embedding, items), f["token_type"], causal=False)

    def forward(self, f: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, d) unit user vectors read at the query token, which stands for the masked next item."""
        masked = f["token_type"] == CONTEXT_TOKEN
        return F.normalize(self.encode(f, masked)[:, -1], dim=-1)

    def training_pairs(self, f: dict[str, torch.Tensor], future_weight: float) -> Pairs:
        item = is_item(f["token_type"])
        masked = item & (torch.rand(item.shape, device=item.device) < self.config.mask_prob)
        # Every sequence predicts at least its last item, the case inference asks for.
        last_item = item & ~torch.cat([item[:, 1:], torch.zeros_like(item[:, :1])], dim=1)
        masked = masked | (last_item & ~masked.any(dim=1, keepdim=True))
        hidden = self.encode(f, masked)
        rows, cols = masked.nonzero(as_tuple=True)
        return Pairs(query=F.normalize(hidden[rows, cols], dim=-1), positive=f["item"][rows, cols],
                     action=f["action"][rows, cols] - 1, scenario=f["scenario"][rows, cols],
                     weight=torch.ones(len(rows), device=hidden.device),
                     group=rows * item.shape[1] + cols)  # each target event is its own session
