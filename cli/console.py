"""The rich console every command prints through: wide enough for the metric tables when piped to a file."""

from __future__ import annotations

from rich.console import Console

MIN_WIDTH = 150


def make_console() -> Console:
    console = Console()
    if not console.is_terminal or console.width < MIN_WIDTH:
        console = Console(width=max(console.width, MIN_WIDTH))
    return console
