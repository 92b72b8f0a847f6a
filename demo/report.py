"""What the demo prints (rich tables) and writes (JSON)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table

from contract.columns import Columns
from demo.replay import ReplayResult, recall_at_k

SHOWN_USERS, SHOWN_ITEMS = 3, 8


def summary(result: ReplayResult) -> dict:
    fresh = [s.freshness_ms for s in result.sessions if s.freshness_ms is not None]
    return {
        "k": result.k, "users": len(result.sessions),
        "recall_at_k": recall_at_k(result.sessions, "served"),
        "popularity_recall_at_k": recall_at_k(result.sessions, "popular"),
        "events_replayed": result.events_replayed, "events_accepted": result.events_accepted,
        "events_applied": result.events_applied,
        "latency_ms": {"p50": _percentile(result.latencies_ms, 50), "p99": _percentile(result.latencies_ms, 99)},
        "freshness_ms": {"p50": _percentile(fresh, 50), "p99": _percentile(fresh, 99)},
        "freshness_missed": sum(s.freshness_ms is None for s in result.sessions),
    }


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def print_stories(console: Console, result: ReplayResult, history: pd.DataFrame, items: pd.DataFrame | None) -> None:
    """A few users: what they did, what the service served in two contexts, and what they did next."""
    category = dict(zip(items[Columns.item], items[Columns.category].astype(str), strict=True)) \
        if items is not None and Columns.category in items else {}
    for story in [s for s in result.sessions if s.targets][:SHOWN_USERS]:
        recent = history[history[Columns.user] == story.user_id].tail(SHOWN_ITEMS)
        table = Table(title=f"user {story.user_id}: recent history", title_justify="left")
        for column in ("item", "category", "action", "context"):
            table.add_column(column)
        for row in recent.itertuples():
            table.add_row(str(getattr(row, Columns.item)), category.get(getattr(row, Columns.item), ""),
                          str(getattr(row, Columns.action, "click")), str(getattr(row, Columns.context, "")))
        console.print(table)
        table = Table(title=f"user {story.user_id}: candidates by context (* = acted on in the next session)",
                      title_justify="left")
        table.add_column(f"context {story.context}")
        table.add_column(f"context {story.other_context}")
        for rank in range(SHOWN_ITEMS):
            table.add_row(*(_cell(items_served, rank, story.targets, category)
                            for items_served in (story.served, story.served_other)))
        console.print(table)


def _cell(items: list, rank: int, targets: set, category: dict) -> str:
    if rank >= len(items):
        return ""
    item = items[rank]
    return f"{'*' if item in targets else ' '} {item} ({category.get(item, '')})"


def print_summary(console: Console, report: dict) -> None:
    table = Table(title="Live replay through the service")
    table.add_column("measure")
    table.add_column("value", justify="right")
    applied = "n/a" if report["events_applied"] is None else f"{report['events_applied']:,}"
    rows = [
        (f"Recall@{report['k']} served (TBGRecall via /v1/recall)", f"{report['recall_at_k']:.3f}"),
        (f"Recall@{report['k']} popularity (same users, viewed filtered)", f"{report['popularity_recall_at_k']:.3f}"),
        ("users replayed", f"{report['users']:,}"),
        ("events replayed / accepted / applied",
         f"{report['events_replayed']:,} / {report['events_accepted']:,} / {applied}"),
        ("/v1/recall latency p50 / p99 (ms)", _pair(report["latency_ms"])),
        ("freshness: webhook -> user vector p50 / p99 (ms)", _pair(report["freshness_ms"])),
    ]
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def _pair(values: dict) -> str:
    return " / ".join("n/a" if values[q] is None else f"{values[q]:.1f}" for q in ("p50", "p99"))
