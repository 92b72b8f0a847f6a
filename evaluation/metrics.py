"""Ranking metrics over the cases of a split; one implementation for every model and benchmark.

For a case with target set T and ranked list R (distinct items), at cut-off K:
- Recall@K   = |R[:K] & T| / |T|
- NDCG@K     = DCG@K / IDCG@K, DCG = sum over hits at rank r (1-based) of 1/log2(r+1), IDCG the DCG of
               min(|T|, K) hits at the top: normalised by the ideal for the case's actual number of targets
- HitRate@K  = 1 if any target is in R[:K]
- MRR        = 1 / rank of the first hit in R (0 without a hit), over the whole list given
- Coverage@K = distinct items recommended in any R[:K] / catalogue size
Overall figures are means over cases.
"""

from __future__ import annotations

import numpy as np

from evaluation.splits import EvalCases


def hit_matrix(recommended: np.ndarray, cases: EvalCases) -> np.ndarray:
    """(n, K) bool: recommended[i, j] is one of case i's targets."""
    n = recommended.shape[0]
    stride = np.int64(max(int(recommended.max(initial=0)), int(cases.target_items.max(initial=0))) + 1)
    rec_keys = np.arange(n, dtype=np.int64)[:, None] * stride + recommended
    case_of_target = np.repeat(np.arange(n, dtype=np.int64), cases.n_targets)
    target_keys = case_of_target * stride + cases.target_items
    return np.isin(rec_keys, target_keys) & (recommended > 0)


def per_case_metrics(recommended: np.ndarray, cases: EvalCases, ks: list[int]) -> dict[str, np.ndarray]:
    """Metric name -> (n,) values per case."""
    hits = hit_matrix(recommended, cases)
    n_targets = np.maximum(cases.n_targets, 1)
    discounts = 1.0 / np.log2(np.arange(2, hits.shape[1] + 2))
    ideal = np.cumsum(discounts)
    values: dict[str, np.ndarray] = {}
    for k in ks:
        top = hits[:, :k]
        values[f"recall@{k}"] = top.sum(axis=1) / n_targets
        values[f"ndcg@{k}"] = (top * discounts[:k]).sum(axis=1) / ideal[np.minimum(n_targets, k) - 1]
        values[f"hitrate@{k}"] = top.any(axis=1).astype(np.float64)
    first_hit = np.argmax(hits, axis=1)
    values["mrr"] = np.where(hits.any(axis=1), 1.0 / (first_hit + 1), 0.0)
    return values


def coverage(recommended: np.ndarray, k: int, n_items: int) -> float:
    top = recommended[:, :k]
    return float(len(np.unique(top[top > 0])) / max(n_items - 1, 1))


def summarize(recommended: np.ndarray, cases: EvalCases, ks: list[int], n_items: int) -> dict[str, float]:
    """Mean of every metric over the cases, plus coverage at the largest K."""
    if len(cases) == 0:
        raise ValueError("no cases to evaluate: no user has a target after the split")
    summary = {name: float(values.mean()) for name, values in per_case_metrics(recommended, cases, ks).items()}
    summary[f"coverage@{max(ks)}"] = coverage(recommended, max(ks), n_items)
    return summary
