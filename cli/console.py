"""The rich console every command prints through: wide enough for the metric tables when piped to a file."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console

MIN_WIDTH = 150


def make_console(stderr: bool = False) -> Console:
    """`stderr` when stdout carries the command's output (`--out -`)."""
    console = Console(stderr=stderr)
    if not console.is_terminal or console.width < MIN_WIDTH:
        console = Console(width=max(console.width, MIN_WIDTH), stderr=stderr)
    return console


@contextmanager
def step_progress(console: Console, title: str) -> Iterator[Callable[[str], None]]:
    """A spinner naming the step in progress, and a line with its time as each step ends: long work whose steps
    have no count to show as a bar (an ONNX export, an index build)."""
    current: dict = {"step": None, "started": 0.0}

    def finish() -> None:
        if current["step"] is not None:
            console.print(f"  {current['step']}: {time.perf_counter() - current['started']:.1f} s")

    with console.status(title) as status:
        def on_step(step: str) -> None:
            finish()
            current.update(step=step, started=time.perf_counter())
            status.update(f"{title}: {step}")

        yield on_step
        finish()
