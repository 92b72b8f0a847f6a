"""Run models over a split and report the metrics, overall and per context, as a rich table or JSON."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from rich.console import Console
from rich.table import Table

from evaluation.metrics import per_case_metrics, summarize
from evaluation.splits import EvalCases, Split, viewed_items

MAX_GROUPS = 8  # per-context rows shown; the rest are pooled into "other"


class Recommender(Protocol):
    name: str

    def recommend(self, cases: EvalCases, k: int, viewed: tuple[np.ndarray, np.ndarray] | None = None,
                  ) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass
class ModelResult:
    name: str
    overall: dict[str, float]
    by_group: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: float = 0.0


def evaluate(split: Split, models: list[Recommender], ks: list[int], filter_viewed: bool = True,
             ) -> list[ModelResult]:
    """Metrics of each (already fitted) model on the split's cases."""
    viewed = viewed_items(split.train, split.cases.user) if filter_viewed else None
    group_of_case, group_names = _groups(split)
    results = []
    for model in models:
        started = time.perf_counter()
        _, recommended = model.recommend(split.cases, max(ks), viewed)
        elapsed = time.perf_counter() - started
        per_case = per_case_metrics(recommended, split.cases, ks)
        by_group = {
            name: {"cases": float((group_of_case == g).sum()),
                   **{metric: float(v[group_of_case == g].mean()) for metric, v in per_case.items()}}
            for g, name in enumerate(group_names) if (group_of_case == g).any()
        }
        overall = summarize(recommended, split.cases, ks, split.train.n_items)
        results.append(ModelResult(model.name, overall, by_group, elapsed))
    return results


def _groups(split: Split) -> tuple[np.ndarray, list[str]]:
    """Group cases by scenario when the data has several, else by context (the most frequent ones)."""
    cases, vocabs = split.cases, split.train.vocabs
    by_scenario = len(np.unique(cases.scenario)) > 1
    codes = cases.scenario if by_scenario else cases.context
    vocab = vocabs.scenarios if by_scenario else vocabs.contexts
    values, counts = np.unique(codes, return_counts=True)
    top = values[np.argsort(-counts, kind="stable")[:MAX_GROUPS]]
    names = [_display(vocab.ids[code]) for code in top]
    group_of_case = np.full(len(codes), len(top), dtype=np.int64)
    for g, code in enumerate(top):
        group_of_case[codes == code] = g
    if (group_of_case == len(top)).any():
        names.append("other")
    return group_of_case, names


def _display(vocab_id: str) -> str:
    return "default" if vocab_id == "<reserved>" else vocab_id


def results_to_json(split: Split, results: list[ModelResult], ks: list[int], filter_viewed: bool) -> dict:
    return {
        "protocol": split.protocol, "ks": ks, "filter_viewed": filter_viewed, "cases": len(split.cases),
        "train_events": len(split.train), "items": split.train.n_items - 1,
        "models": {r.name: {"overall": r.overall, "by_context": r.by_group, "seconds": r.seconds} for r in results},
    }


def print_results(console: Console, split: Split, results: list[ModelResult], ks: list[int],
                  title: str = "") -> None:
    """The comparison table, then Recall@K per context for each model."""
    metric_names = [f"recall@{k}" for k in ks] + [f"ndcg@{k}" for k in ks] + [f"hitrate@{ks[0]}", "mrr",
                                                                              f"coverage@{max(ks)}"]
    table = Table(title=title or f"{split.protocol} split: {len(split.cases):,} cases, "
                                 f"{len(split.train):,} training events")
    table.add_column("model")
    for name in metric_names:
        table.add_column(_header(name), justify="right")
    for result in results:
        table.add_row(result.name, *(f"{result.overall[name]:.4f}" for name in metric_names))
    console.print(table)
    groups = Table(title=f"Recall@{max(ks)} by context")
    groups.add_column("context")
    groups.add_column("cases", justify="right")
    for result in results:
        groups.add_column(result.name, justify="right")
    for group in results[0].by_group if results else []:
        values = [f"{r.by_group[group][f'recall@{max(ks)}']:.4f}" for r in results]
        groups.add_row(group, f"{int(results[0].by_group[group]['cases']):,}", *values)
    console.print(groups)


def _header(metric: str) -> str:
    return metric.replace("recall", "Recall").replace("ndcg", "NDCG").replace("hitrate", "HR").replace(
        "mrr", "MRR").replace("coverage", "Cov")
