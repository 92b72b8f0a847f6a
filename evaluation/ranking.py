"""Top-k selection over the catalogue, shared by every model: numpy scores in, `(scores, ids)` out."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

ROWS_PER_CHUNK = 256


def top_k(score_rows: Callable[[np.ndarray], np.ndarray], n_rows: int, k: int,
          exclude_offsets: np.ndarray | None = None, exclude_items: np.ndarray | None = None,
          ) -> tuple[np.ndarray, np.ndarray]:
    """The k best item codes for each row, best first.

    `score_rows(rows)` gives a (len(rows), n_items) float32 score matrix; it is called in chunks so a large
    catalogue never needs all rows in memory. Item code 0 (padding) is never returned, nor a row's excluded
    items (CSR `exclude_offsets`/`exclude_items`). Rows with fewer than k candidates are padded with id 0 and
    score -inf.
    """
    out_ids = np.zeros((n_rows, k), dtype=np.int32)
    out_scores = np.full((n_rows, k), -np.inf, dtype=np.float32)
    for start in range(0, n_rows, ROWS_PER_CHUNK):
        rows = np.arange(start, min(start + ROWS_PER_CHUNK, n_rows))
        scores = np.array(score_rows(rows), dtype=np.float32, copy=True)
        scores[:, 0] = -np.inf
        if exclude_offsets is not None and exclude_items is not None:
            lengths = np.diff(exclude_offsets[rows[0]:rows[-1] + 2])
            local_rows = np.repeat(np.arange(len(rows)), lengths)
            scores[local_rows, exclude_items[exclude_offsets[rows[0]]:exclude_offsets[rows[-1] + 1]]] = -np.inf
        kk = min(k, scores.shape[1])
        best = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        best_scores = np.take_along_axis(scores, best, axis=1)
        order = np.argsort(-best_scores, axis=1, kind="stable")
        ids, picked = np.take_along_axis(best, order, axis=1), np.take_along_axis(best_scores, order, axis=1)
        ids[~np.isfinite(picked)] = 0
        out_ids[rows, :kk], out_scores[rows, :kk] = ids, picked
    return out_scores, out_ids
