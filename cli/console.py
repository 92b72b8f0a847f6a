"""The rich console every command prints through: wide enough for the metric tables when piped to a file."""

from __future__ import annotations

from rich.console import Console

MIN_WIDTH = 150


def make_console(stderr: bool = False) -> Console:
    """`stderr` when stdout carries the command's output (`--out -`)."""
    console = Console(stderr=stderr)
    if not console.is_terminal or console.width < MIN_WIDTH:
        console = Console(width=max(console.width, MIN_WIDTH), stderr=stderr)
    return console
