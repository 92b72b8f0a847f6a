"""Popularity baselines, the first rows of every comparison table.

- `popular`: the items with the most target actions (click, cart, pay) in the training log.
- `context-popular`: the most popular items among sessions of the request's context, then global popularity
  for the rest of the list (and for contexts never seen in training).
"""

from __future__ import annotations

import numpy as np

from contract.columns import CLICK
from contract.events import EventLog
from evaluation.ranking import top_k
from evaluation.splits import EvalCases

# Global counts are scaled below one context event, so they only order what the context leaves tied.
GLOBAL_TIE_BREAK = 1e-6


class PopularModel:
    name = "popular"

    def fit(self, log: EventLog) -> PopularModel:
        acted = log.action >= CLICK
        counts = np.bincount(log.item[acted], minlength=log.n_items).astype(np.float64)
        self.item_scores = (counts / max(counts.max(), 1.0)).astype(np.float32)
        return self

    def recommend(self, cases: EvalCases, k: int, viewed: tuple[np.ndarray, np.ndarray] | None = None,
                  ) -> tuple[np.ndarray, np.ndarray]:
        """(scores, item codes), each (n_cases, k); `viewed` is a CSR (offsets, items) to leave out."""
        scores = self._padded(self.item_scores, cases)
        return top_k(lambda rows: np.broadcast_to(scores, (len(rows), len(scores))), len(cases), k, *viewed or ())

    @staticmethod
    def _padded(scores: np.ndarray, cases: EvalCases) -> np.ndarray:
        """Scores over a catalogue that may have grown since `fit` (new items score 0)."""
        n_items = max(len(scores), int(cases.target_items.max(initial=0)) + 1)
        return np.pad(scores, (0, n_items - len(scores)))


class ContextPopularModel(PopularModel):
    name = "context-popular"

    def fit(self, log: EventLog) -> ContextPopularModel:
        super().fit(log)
        acted = log.action >= CLICK
        context_item = log.context[acted].astype(np.int64) * log.n_items + log.item[acted]
        pair_keys, pair_counts = np.unique(context_item, return_counts=True)
        self.pair_context = (pair_keys // log.n_items).astype(np.int64)
        self.pair_item = (pair_keys % log.n_items).astype(np.int64)
        self.pair_count = pair_counts.astype(np.float32)
        self.context_offsets = np.searchsorted(self.pair_context, np.arange(len(log.vocabs.contexts) + 1))
        return self

    def recommend(self, cases: EvalCases, k: int, viewed: tuple[np.ndarray, np.ndarray] | None = None,
                  ) -> tuple[np.ndarray, np.ndarray]:
        global_scores = self._padded(self.item_scores, cases) * GLOBAL_TIE_BREAK

        def score_rows(rows: np.ndarray) -> np.ndarray:
            scores = np.tile(global_scores, (len(rows), 1))
            for local, context in enumerate(cases.context[rows]):
                if context + 1 < len(self.context_offsets):
                    start, end = self.context_offsets[context], self.context_offsets[context + 1]
                    scores[local, self.pair_item[start:end]] += self.pair_count[start:end]
            return scores

        return top_k(score_rows, len(cases), k, *viewed or ())
