"""The softmax-attention transformer block SASRec and BERT4Rec share (pre-norm, as in RecTools)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from contract.tokens import ITEM_TOKEN, PAD


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads, self.head_dim = n_heads, dim // n_heads
        self.attention_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.output = nn.Linear(dim, dim)
        self.feed_forward_norm = nn.LayerNorm(dim)
        self.feed_forward = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x (B, T, d); allowed (B, T, T) bool: query i may attend to key j."""
        batch, length, dim = x.shape
        q, k, v = self.qkv(self.attention_norm(x)).chunk(3, dim=-1)
        q, k, v = (t.view(batch, length, self.n_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / self.head_dim**0.5  # (B, H, T, T)
        scores = scores.masked_fill(~allowed[:, None], -1e9)
        y = (F.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(batch, length, dim)
        x = x + self.dropout(self.output(y))
        return x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))


class TransformerStack(nn.Module):
    """Learned positions (counted from the most recent token), input dropout, the blocks and a final norm."""

    def __init__(self, dim: int, n_heads: int, n_layers: int, max_len: int, dropout: float):
        super().__init__()
        self.max_len = max_len
        self.position_embedding = nn.Embedding(max_len + 1, dim)
        nn.init.normal_(self.position_embedding.weight, std=0.02)
        self.input_dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(dim, n_heads, dropout) for _ in range(n_layers))
        self.final_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, token_type: torch.Tensor, causal: bool) -> torch.Tensor:
        """x (B, T, d) token inputs -> (B, T, d) hidden states."""
        positions = positions_from_right(token_type).clamp(min=0, max=self.max_len)
        x = self.input_dropout(x + self.position_embedding(positions)) * (token_type != PAD)[..., None].float()
        allowed = item_attention(token_type, causal=causal)
        for block in self.blocks:
            x = block(x, allowed)
        return self.final_norm(x)


def positions_from_right(token_type: torch.Tensor) -> torch.Tensor:
    """(B, T) learned-position ids counted from the most recent token (0), so left padding never shifts them."""
    valid = (token_type != PAD).long()
    return valid.flip(-1).cumsum(-1).flip(-1) - 1


def item_attention(token_type: torch.Tensor, causal: bool) -> torch.Tensor:
    """(B, T, T) bool over item (and query) tokens; a padded query still sees itself so softmax stays finite."""
    valid = token_type != PAD
    allowed = valid[:, None, :] & valid[:, :, None]
    if causal:
        length = token_type.shape[1]
        allowed = allowed & torch.tril(torch.ones(length, length, dtype=torch.bool, device=token_type.device))
    eye = torch.eye(token_type.shape[1], dtype=torch.bool, device=token_type.device)[None]
    return allowed | eye


def is_item(token_type: torch.Tensor) -> torch.Tensor:
    return token_type == ITEM_TOKEN
