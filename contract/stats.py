"""Summary statistics of an event log: what a user checks before trusting a data set."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from rich.console import Console
from rich.table import Table

from contract.columns import ACTIONS, CLICK, SHOW
from contract.events import EventLog


def dataset_stats(log: EventLog) -> dict[str, object]:
    """Counts, session shape, action mix, context and scenario counts, time range."""
    sessions_per_user = np.diff(log.user_offsets)
    events_per_session = np.diff(log.session_offsets)
    action_counts = np.bincount(log.action, minlength=len(ACTIONS))
    stats: dict[str, object] = {
        "events": len(log),
        "users": len(log.active_users),
        "items (catalogue)": log.n_items - 1,
        "items with events": len(np.unique(log.item)),
        "sessions": len(events_per_session),
        "sessions per user (mean)": round(float(len(events_per_session) / max(len(sessions_per_user), 1)), 2),
        "events per session (mean)": round(float(events_per_session.mean()), 2),
        "contexts": len(log.vocabs.contexts) - 1,
        "scenarios": len(log.vocabs.scenarios) - 1,
        "categories": len(log.vocabs.categories) - 1,
    }
    for code, name in enumerate(ACTIONS):
        stats[f"action {name}"] = int(action_counts[code])
    if action_counts[SHOW] > 0:
        stats["click-through rate"] = round(float(action_counts[CLICK] / action_counts[SHOW]), 4)
    if log.has_timestamp:
        stats["first event"] = _iso(int(log.timestamp.min()))
        stats["last event"] = _iso(int(log.timestamp.max()))
    return stats


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M")


def print_stats(console: Console, stats: dict[str, object], title: str = "") -> None:
    table = Table(title=title)
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for name, value in stats.items():
        table.add_row(name, f"{value:,}" if isinstance(value, int) else str(value))
    console.print(table)
