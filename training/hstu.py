"""HSTU blocks (Zhai et al., "Actions speak louder than words", 2024) with session-wise RoPE and the
TBGRecall session mask. Plain PyTorch ops only, so the encoder exports to ONNX."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from contract.tokens import CONTEXT_TOKEN, PAD


def session_mask(token_type: torch.Tensor, session_pos: torch.Tensor) -> torch.Tensor:
    """(B, T, T) float: 1 where query token i may attend to key token j.

    A token sees every token of earlier sessions, its own session's context token, and itself; the items of one
    session never see each other; padding sees nothing and is seen by nothing.
    """
    valid = token_type != PAD  # (B, T)
    earlier = session_pos[:, None, :] < session_pos[:, :, None]  # key's session before query's
    same = session_pos[:, None, :] == session_pos[:, :, None]
    key_is_context = (token_type == CONTEXT_TOKEN)[:, None, :]
    eye = torch.eye(token_type.shape[1], dtype=torch.bool, device=token_type.device)[None]
    allowed = earlier | (same & (key_is_context | eye))
    return (allowed & valid[:, None, :] & valid[:, :, None]).float()


def causal_mask(token_type: torch.Tensor) -> torch.Tensor:
    """(B, T, T) float: the plain causal mask (an ablation: items of a session see the ones before them)."""
    valid = token_type != PAD
    length = token_type.shape[1]
    lower = torch.tril(torch.ones(length, length, dtype=torch.bool, device=token_type.device))[None]
    return (lower & valid[:, None, :] & valid[:, :, None]).float()


N_DISTANCE_BUCKETS = 32


def distance_buckets(session_pos: torch.Tensor) -> torch.Tensor:
    """(B, T, T) bucket of how many sessions key j lies before query i: exact up to 8, then log-spaced."""
    distance = (session_pos[:, :, None] - session_pos[:, None, :]).clamp(min=0).float()
    log_bucket = 8 + (torch.log2(distance.clamp(min=8) / 8) * 4).floor()
    return torch.where(distance < 8, distance, log_bucket).clamp(max=N_DISTANCE_BUCKETS - 1).long()


def rope_angles(positions: torch.Tensor, head_dim: int, base: float = 10_000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (B, 1, T, head_dim) for integer positions (B, T): here the session index."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    angles = positions.float()[..., None] * inv_freq  # (B, T, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)[:, None]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, T, Dh) by the angles: q.k then depends only on the difference of positions."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class HSTUBlock(nn.Module):
    """One HSTU layer: fused U,V,Q,K with SiLU; pointwise SiLU attention over a fixed divisor; norm, gate by U."""

    def __init__(self, dim: int, n_heads: int, max_len: int, dropout: float, typed: bool,
                 gated_residual: bool = False):
        super().__init__()
        self.n_heads, self.head_dim, self.max_len = n_heads, dim // n_heads, max_len
        self.input_norm = nn.LayerNorm(dim)
        # typed: context and item tokens get their own U/V/Q/K projection (first block of TBGRecall).
        self.uvqk = nn.Linear(dim, 4 * dim)
        self.uvqk_context = nn.Linear(dim, 4 * dim) if typed else None
        # HSTU's relative attention bias, over session distance: lets a head single out the latest sessions,
        # which pointwise (unnormalised) attention cannot do by competition as softmax does.
        self.distance_bias = nn.Embedding(N_DISTANCE_BUCKETS, n_heads)
        nn.init.zeros_(self.distance_bias.weight)
        self.attention_norm = nn.LayerNorm(dim)
        self.output = nn.Linear(dim, dim)
        # LiGR (LinkedIn, 2025; eSASRec): the output joins the residual stream through a sigmoid gate of the input
        self.residual_gate = nn.Linear(dim, dim) if gated_residual else None
        self.dropout = nn.Dropout(dropout)

    def project(self, x: torch.Tensor, is_context: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor] | None) -> tuple[torch.Tensor, ...]:
        """u (B, T, d) and q, k, v (B, H, T, Dh), q and k rotated by session-wise RoPE."""
        batch, length, _ = x.shape
        h = self.input_norm(x)
        projected = self.uvqk(h)
        if self.uvqk_context is not None:
            projected = torch.where(is_context[..., None], self.uvqk_context(h), projected)
        u, v, q, k = F.silu(projected).chunk(4, dim=-1)  # each (B, T, d)
        q, k, v = (t.view(batch, length, self.n_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        return u, q, k, v

    def attend(self, x: torch.Tensor, u: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               bias: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B, Tq, d) plus the block's output for queries q (B, H, Tq, Dh) over keys and values (B, H, Tk, Dh);
        bias (B, H, Tq, Tk), mask (B, 1, Tq, Tk). The query step calls it with Tq = 1."""
        batch, length, dim = x.shape
        # Scale q, not the (B, H, T, T) scores: every full-size elementwise op costs as much as the matmul here.
        scores = (q * self.head_dim**-0.5) @ k.transpose(-1, -2) + bias  # (B, H, Tq, Tk)
        # No softmax: SiLU weights divided by the maximum length, a constant, so serving matches training.
        attention = F.silu(scores) * (mask * (1.0 / self.max_len))
        y = (attention @ v).transpose(1, 2).reshape(batch, length, dim)
        y = self.dropout(self.output(self.attention_norm(y) * u))
        if self.residual_gate is not None:
            y = torch.sigmoid(self.residual_gate(self.input_norm(x))) * y
        return x + y

    def bias_of(self, buckets: torch.Tensor) -> torch.Tensor:
        """(B, Tq, Tk) distance buckets -> (B, H, Tq, Tk) attention bias. Indexing the (H, buckets) table gives
        (H, B, Tq, Tk); its backward is several times faster than nn.Embedding's over millions of indices."""
        return self.distance_bias.weight.t()[:, buckets].transpose(0, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, is_context: torch.Tensor,
                rope: tuple[torch.Tensor, torch.Tensor] | None, buckets: torch.Tensor,
                keys_values: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
        """`keys_values`, when given, receives this block's (k, v): the prefix state of the query step."""
        u, q, k, v = self.project(x, is_context, rope)
        if keys_values is not None:
            keys_values.append((k, v))
        return self.attend(x, u, q, k, v, self.bias_of(buckets), mask[:, None])
