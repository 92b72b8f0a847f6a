"""Batch candidate generation with a trained encoder: histories + next contexts -> user vectors -> top-k."""

from __future__ import annotations

import numpy as np
import torch

from training.contract import EventLog
from training.features import (
    TOKEN_FEATURES,
    build_tokens,
    collate,
    history_windows,
    query_tokens,
    session_table,
)
from training.model import RecallModel
from training.ranking import top_k
from training.splits import EvalCases

ENCODE_BATCH = 256


def to_tensors(batch: dict[str, np.ndarray], device: torch.device | str) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(batch[name]).to(device) for name in TOKEN_FEATURES}


def clip_to_model(batch: dict[str, np.ndarray], sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """Codes the model has no row for (ids first seen after training) become 0: unknown item, default context."""
    for name, vocab in (("item", "items"), ("context", "contexts"), ("scenario", "scenarios")):
        values = batch[name]
        values[values >= sizes[vocab]] = 0
    return batch


class EncoderRecommender:
    """Recommends with `model`, reading each case's history from `history` (the events before the request)."""

    def __init__(self, model: RecallModel, history: EventLog, name: str = ""):
        self.model = model
        self.name = name or model.config.encoder
        self.table = session_table(history, model.config.max_items_per_session)
        self.tokens = build_tokens(self.table, with_context=model.config.encoder == "tbgrecall")

    @torch.no_grad()
    def user_vectors(self, users: np.ndarray, context: np.ndarray, scenario: np.ndarray,
                     request_time: np.ndarray) -> np.ndarray:
        """(n, d) float32 unit user vectors for the given requests."""
        self.model.eval()
        device = self.model.task_bias.device
        windows = history_windows(self.table, self.tokens, users, self.model.config.max_len)
        query = query_tokens(self.table, windows, context, scenario, request_time)
        vectors = []
        for start in range(0, len(users), ENCODE_BATCH):
            rows = slice(start, start + ENCODE_BATCH)
            batch = collate(self.tokens, windows[rows], {name: values[rows] for name, values in query.items()})
            vectors.append(self.model(to_tensors(clip_to_model(batch, self.model.sizes), device)).float().cpu())
        return torch.cat(vectors).numpy() if vectors else np.zeros((0, self.model.config.dim), np.float32)

    def recommend(self, cases: EvalCases, k: int, viewed: tuple[np.ndarray, np.ndarray] | None = None,
                  ) -> tuple[np.ndarray, np.ndarray]:
        users = self.user_vectors(cases.user, cases.context, cases.scenario, cases.request_time)
        items = self.model.item_vectors().float().cpu().numpy()
        n_known = len(items)
        n_items = max(n_known, int(cases.target_items.max(initial=0)) + 1)

        def score_rows(rows: np.ndarray) -> np.ndarray:
            scores = np.full((len(rows), n_items), -np.inf, dtype=np.float32)
            scores[:, :n_known] = users[rows] @ items.T  # items new since training have no vector yet
            return scores

        return top_k(score_rows, len(cases), k, *viewed or ())
