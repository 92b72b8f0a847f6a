"""SASRec (Kang & McAuley, 2018): causal softmax self-attention over the acted items, learned positions.

The user vector is the output at the most recent item; the request's context is not used (a baseline).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from training.config import ModelConfig
from training.item_tower import ItemTower
from training.pairs import Pairs
from training.transformer import TransformerStack, is_item


class SASRecEncoder(nn.Module):
    def __init__(self, config: ModelConfig, sizes: dict[str, int], item_tower: ItemTower):
        super().__init__()
        self.config = config
        self.item_tower = item_tower
        self.stack = TransformerStack(config.dim, config.n_heads, config.n_layers, config.max_len, config.dropout)

    def encode(self, f: dict[str, torch.Tensor]) -> torch.Tensor:
        # The query token of inference batches is not an item: SASRec treats it as padding.
        token_type = torch.where(is_item(f["token_type"]), f["token_type"], torch.zeros_like(f["token_type"]))
        # Unit item vectors scaled to the width's norm, as SASRec scales its embeddings by sqrt(d).
        return self.stack(self.item_tower(f["item"]) * self.config.dim**0.5, token_type, causal=True)

    def forward(self, f: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, d) unit user vectors: the output at the last item, just before the query token."""
        return F.normalize(self.encode(f)[:, -2], dim=-1)

    def training_pairs(self, f: dict[str, torch.Tensor], future_weight: float) -> Pairs:
        """Shifted sequence: the output at each item predicts the next item."""
        hidden = self.encode(f)
        item = is_item(f["token_type"])
        usable = item[:, :-1] & item[:, 1:]
        rows, cols = usable.nonzero(as_tuple=True)
        return Pairs(query=F.normalize(hidden[rows, cols], dim=-1), positive=f["item"][rows, cols + 1],
                     action=f["action"][rows, cols + 1] - 1, scenario=f["scenario"][rows, cols + 1],
                     weight=torch.ones(len(rows), device=hidden.device),
                     group=rows * item.shape[1] + cols + 1)  # each target event is its own session
