"""Batch candidate generation with a trained encoder: histories + next contexts -> user vectors -> top-k."""

from __future__ import annotations

import numpy as np
import torch

from contract.events import EventLog
from contract.tokens import (
    TOKEN_FEATURES,
    build_tokens,
    clip_to_model,
    collate,
    history_windows,
    query_tokens,
    session_table,
)
from evaluation.ranking import top_k
from evaluation.splits import EvalCases
from training.config import readable_log, uses_context_tokens
from training.model import RecallModel

ENCODE_BATCH = 256


def to_tensors(batch: dict[str, np.ndarray], device: torch.device | str) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(batch[name]).to(device) for name in TOKEN_FEATURES}


class EncoderRecommender:
    """Recommends with `model`, reading each case's history from `history` (the events before the request)."""

    def __init__(self, model: RecallModel, history: EventLog, name: str = ""):
        self.model = model
        self.name = name or model.config.encoder
        self.table = session_table(readable_log(history, model.config), model.config.max_items_per_session)
        self.tokens = build_tokens(self.table, with_context=uses_context_tokens(model.config))

    def inputs(self, users: np.ndarray, context: np.ndarray, scenario: np.ndarray,
               request_time: np.ndarray) -> dict[str, np.ndarray]:
        """The encoder's (B, T) inputs for these requests: each user's recent history plus the query token."""
        windows = history_windows(self.table, self.tokens, users, self.model.config.max_len)
        query = query_tokens(self.table, windows, context, scenario, request_time)
        return clip_to_model(collate(self.tokens, windows, query), self.model.sizes)

    @torch.no_grad()
    def user_vectors(self, users: np.ndarray, context: np.ndarray, scenario: np.ndarray,
                     request_time: np.ndarray) -> np.ndarray:
        """(n, d) float32 unit user vectors for the given requests."""
        self.model.eval()
        device = self.model.task_bias.device
        vectors = []
        for start in range(0, len(users), ENCODE_BATCH):
            rows = slice(start, start + ENCODE_BATCH)
            batch = self.inputs(users[rows], context[rows], scenario[rows], request_time[rows])
            vectors.append(self.model(to_tensors(batch, device)).float().cpu())
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


def last_contexts(log: EventLog, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each user's last session context and scenario (the default 0 for users without history)."""
    session_users = log.session_user
    is_last = np.r_[session_users[1:] != session_users[:-1], True] if len(session_users) else np.zeros(0, bool)
    last_users = session_users[is_last]
    position = np.minimum(np.searchsorted(last_users, users), max(len(last_users) - 1, 0))
    known = (last_users[position] == users) if len(last_users) else np.zeros(len(users), bool)
    context = np.where(known, log.session_context[is_last][position] if len(last_users) else 0, 0)
    scenario = np.where(known, log.session_scenario[is_last][position] if len(last_users) else 0, 0)
    return context.astype(np.int32), scenario.astype(np.int32)


def sample_inputs(model: RecallModel, log: EventLog, n_users: int = 64) -> dict[str, np.ndarray]:
    """Encoder inputs for real histories of `log` (users spread over the log, plus one cold user): what export
    checks ONNX against torch with."""
    users = log.active_users[np.linspace(0, len(log.active_users) - 1, min(n_users, len(log.active_users)))
                             .astype(np.int64)]
    users = np.r_[users, len(log.vocabs.users) + 1]  # a user with no history: the cold-start path
    context, scenario = last_contexts(log, users)
    now = np.full(len(users), int(log.timestamp.max()) if log.has_timestamp else 0, dtype=np.int64)
    return EncoderRecommender(model, log).inputs(users, context, scenario, now)
