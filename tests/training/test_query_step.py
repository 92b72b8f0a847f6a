"""The query step: one prefix state per history, then any context and request time, gives the full encoder's
vector (the exactness the request path relies on), in every TBGRecall variant that reads a context token."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from contract.tokens import CONTEXT_TOKEN, ITEM_TOKEN
from training.config import ModelConfig
from training.model import RecallModel
from training.query_step import QUERY_FEATURES, forward_with_prefix, query_step, supports_query_step

SIZES = {"items": 40, "contexts": 6, "scenarios": 3, "categories": 4, "sellers": 4, "users": 3}


def histories(rng: np.random.Generator, n: int, max_len: int) -> list[list[dict]]:
    """Each row: its tokens as dicts (context token, then items, per session), several sessions."""
    rows = []
    for _ in range(n):
        tokens, n_sessions = [], int(rng.integers(1, 7))
        for session in range(n_sessions):
            time = {"scenario": int(rng.integers(1, 3)), "hour": int(rng.integers(1, 25)),
                    "weekday": int(rng.integers(1, 8)), "gap": int(rng.integers(0, 20)), "session_pos": session}
            tokens.append({"token_type": CONTEXT_TOKEN, "item": 0, "action": 0,
                           "context": int(rng.integers(0, 6)), **time})
            for _ in range(int(rng.integers(1, 5))):
                tokens.append({"token_type": ITEM_TOKEN, "item": int(rng.integers(1, 40)),
                               "action": int(rng.integers(1, 5)), "context": 0, **time})
        rows.append(tokens[-(max_len - 1):] if len(tokens) < max_len else tokens[:max_len - 1])
    return rows


def batch(rows: list[list[dict]], queries: list[dict]) -> dict[str, torch.Tensor]:
    """Left-padded (B, T) features: each row's history, then its query token."""
    width = max(len(row) for row in rows) + 1
    names = ("token_type", "item", "action", "context", "scenario", "hour", "weekday", "gap", "session_pos")
    out = {name: torch.zeros(len(rows), width, dtype=torch.long) for name in names}
    for b, (row, query) in enumerate(zip(rows, queries, strict=True)):
        for t, token in enumerate([*row, {"token_type": CONTEXT_TOKEN, "item": 0, "action": 0, **query}]):
            for name in names:
                out[name][b, width - len(row) - 1 + t] = token[name]
    return out


def query_of(rng: np.random.Generator, row: list[dict]) -> dict:
    return {"context": int(rng.integers(0, 6)), "scenario": int(rng.integers(1, 3)), "hour": int(rng.integers(1, 25)),
            "weekday": int(rng.integers(1, 8)), "gap": int(rng.integers(0, 20)),
            "session_pos": row[-1]["session_pos"] + 1}


VARIANTS = {"default": {}, "learned positions": {"positions": "learned"}, "causal mask": {"attention_mask": "causal"},
            "no previous session": {"previous_session": False}, "no context": {"use_context": False},
            "untyped": {"type_towers": False}, "gated residual": {"gated_residual": True}}


@pytest.mark.parametrize("variant", VARIANTS)
def test_query_step_over_stored_prefixes_equals_the_full_encoder_for_any_context(variant):
    torch.manual_seed(0)
    config = ModelConfig(dim=16, n_heads=2, n_layers=2, max_len=24, **VARIANTS[variant])
    model = RecallModel(config, SIZES).eval()
    encoder, rng = model.encoder, np.random.default_rng(1)
    rows = histories(rng, 6, config.max_len)
    with torch.no_grad():
        # The worker: one pass over each history with some query token, keeping the prefix of its history part.
        f = batch(rows, [query_of(rng, row) for row in rows])
        _, keys, values, buckets, previous = forward_with_prefix(encoder, f)
        width = f["token_type"].shape[1]
        lengths = [len(row) for row in rows]
        # Requests: new contexts and request times over those prefixes, padded to one batch (stored as fp16).
        for dtype, worst_cosine in ((torch.float32, 1 - 1e-6), (torch.float16, 0.9999)):
            queries = [query_of(rng, row) for row in rows]
            n = max(lengths)
            stored_keys = torch.zeros(len(rows), config.n_layers, config.n_heads, n, 8, dtype=dtype)
            stored_values, stored_buckets = torch.zeros_like(stored_keys), torch.zeros(len(rows), n, dtype=torch.long)
            key_mask = torch.zeros(len(rows), n)
            for b, length in enumerate(lengths):
                history = slice(width - 1 - length, width - 1)
                stored_keys[b, :, :, :length] = keys[b, :, :, history]
                stored_values[b, :, :, :length] = values[b, :, :, history]
                stored_buckets[b, :length], key_mask[b, :length] = buckets[b, history], 1.0
            query = {name: torch.tensor([q[name] for q in queries]) for name in QUERY_FEATURES}
            stepped = query_step(encoder, query, stored_keys, stored_values, stored_buckets, key_mask, previous)
            full = model(batch(rows, queries))
            cosine = F.cosine_similarity(stepped, full, dim=-1)
            assert cosine.min() >= worst_cosine, (variant, dtype, cosine)
        # The vectors do depend on the request's context: the step is not reading a stale one.
        assert not torch.allclose(stepped, model(f), atol=1e-3)


def test_only_the_session_layout_has_a_query_step():
    assert supports_query_step(ModelConfig())
    assert not supports_query_step(ModelConfig(layout="items"))
    assert not supports_query_step(ModelConfig(encoder="sasrec"))
