"""The request-time half of TBGRecall's session layout: a history's prefix state and the one-token query step.

The query token is the last token, and no history token attends to it (the session mask; the causal ablation
too), so everything the encoder computes for a history is fixed until the user's next event. The near-line
worker keeps what the query token reads of it: per block, the history's keys and values after session-wise RoPE;
each history token's session-distance bucket from the query; and the previous session's mean item input, which
the query token carries. A request then computes its one token per block against them: O(T·d) instead of the
full encoder's O(T²·d), and the same vector as the full encoder (tests/training/test_query_step.py).
"""

from __future__ import annotations

import torch

from contract.prefix_state import QUERY_FEATURES
from training.config import ModelConfig, uses_context_tokens
from training.tbgrecall import TBGRecallEncoder


def supports_query_step(config: ModelConfig) -> bool:
    """The session layout reads the user vector at the request's own context token. The items layout, SASRec and
    BERT4Rec read it where the request's token changes nothing: their precomputed vector serves every context."""
    return uses_context_tokens(config)


def forward_with_prefix(encoder: TBGRecallEncoder, f: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The encoder's (B, d) user vectors and the prefix state of each row's history (every position but the
    query token's last one is history; padding is left for the caller to drop):
    keys, values (B, L, H, T, Dh); buckets (B, T), each token's distance bucket from the query token;
    previous (B, d), the previous session's mean item input at the query token (zeros when unused)."""
    record: dict = {}
    hidden = encoder.encode(f, record)
    vectors = encoder.user_vector(hidden[:, -1])
    keys = torch.stack([k for k, _ in record["keys_values"]], dim=1)
    values = torch.stack([v for _, v in record["keys_values"]], dim=1)
    previous = record["previous"][:, -1] if record["previous"] is not None else torch.zeros_like(vectors)
    return vectors, keys, values, record["buckets"][:, -1], previous


def query_step(encoder: TBGRecallEncoder, query: dict[str, torch.Tensor], keys: torch.Tensor, values: torch.Tensor,
               buckets: torch.Tensor, key_mask: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """(B, d) unit user vectors of the query tokens `query` (name -> (B,), the features of QUERY_FEATURES) over
    stored prefixes: keys, values (B, L, H, N, Dh) of any float type, buckets (B, N), key_mask (B, N) 1 on
    history tokens and 0 on padding, previous (B, d)."""
    f = {name: query[name][:, None] for name in QUERY_FEATURES}  # (B, 1): one token per row
    uses_previous = encoder.config.previous_session
    x = encoder.context_input(f, encoder.shared_embedding(f), previous[:, None] if uses_previous else None)
    if encoder.position_embedding is not None:
        x = x + encoder.position_embedding(f["session_pos"].clamp(max=encoder.config.max_len))
    is_context, rope = torch.ones_like(f["session_pos"], dtype=torch.bool), encoder.rope(f["session_pos"])
    # The query token also attends to itself, at session distance 0.
    self_column = torch.zeros_like(f["session_pos"])
    bucket_row = torch.cat([buckets, self_column], dim=1)[:, None]  # (B, 1, N + 1)
    mask = torch.cat([key_mask, torch.ones_like(key_mask[:, :1])], dim=1)[:, None, None]  # (B, 1, 1, N + 1)
    for layer, block in enumerate(encoder.blocks):
        u, q, k, v = block.project(x, is_context, rope)  # q, k, v (B, H, 1, Dh)
        all_keys = torch.cat([keys[:, layer].float(), k], dim=2)  # (B, H, N + 1, Dh)
        all_values = torch.cat([values[:, layer].float(), v], dim=2)
        x = block.attend(x, u, q, all_keys, all_values, block.bias_of(bucket_row), mask)
    return encoder.user_vector(encoder.final_norm(x)[:, 0])
