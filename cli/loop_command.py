"""`recall loop`: the production loop on a schedule. Each round trains on the event archive, warm-started from
the live version's run, and publishes the result through the quality gate; a refused round changes nothing."""

from __future__ import annotations

import argparse
import json
import re
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path

from cli.console import make_console
from contract.errors import DataError

PERIOD_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def register(commands: argparse._SubParsersAction) -> None:
    loop = commands.add_parser("loop", help="retrain on the archive and publish through the gate, on a schedule")
    loop.add_argument("--archive", required=True, type=Path, help="RECALL_ARCHIVE_DIR of the service")
    loop.add_argument("--index", required=True, type=Path, help="index root the service reads")
    loop.add_argument("--runs", required=True, type=Path, help="directory the rounds' runs are written under")
    loop.add_argument("--every", default="24h", help="time between rounds, such as 24h, 30m (default: %(default)s)")
    loop.add_argument("--once", action="store_true", help="one round, then exit with its code")
    loop.add_argument("--gate-tolerance", type=float, default=0.02,
                      help="refuse a candidate whose NDCG@10 is below (1 - this) x the live version's")
    loop.add_argument("--time-budget", type=float, default=30.0, help="minutes of training per round")
    loop.set_defaults(handler=run_loop)


def period_seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", text.strip())
    if not match or float(match.group(1)) <= 0:
        raise DataError("--every", f"expected a positive number and a unit s, m, h or d (such as 24h), got {text!r}")
    return float(match.group(1)) * PERIOD_UNITS[match.group(2)]


def live_run(index: Path) -> Path | None:
    """The run the live version was exported from, when it is still on disk (the warm start's parent)."""
    from index_builder.versions import current_version

    version = current_version(index)
    if version is None:
        return None
    try:
        run = Path(json.loads((index / "versions" / version / "manifest.json").read_text())["model"]["run"])
    except (OSError, ValueError, KeyError):
        return None
    return run if (run / "model.pt").exists() else None


def one_round(args: argparse.Namespace) -> int:
    from cli.artifact_commands import publish_run
    from training.pipeline import TrainRequest, train_run

    console = make_console()
    if not args.archive.is_dir() or not any(args.archive.rglob("*.parquet")):
        console.print(f"{args.archive}: no archived events yet; nothing to train on this round")
        return 0
    parent = live_run(args.index)
    out = args.runs / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    console.print(f"round: training on {args.archive} into {out}"
                  + (f", warm-started from {parent}" if parent else ", from scratch (no live run on disk)"))
    train_run(TrainRequest(events=args.archive, out=out, init_from=parent, time_budget_s=args.time_budget * 60),
              console)
    return publish_run(out, args.index, args.archive, args.gate_tolerance)


def run_loop(args: argparse.Namespace) -> int:
    every_s = period_seconds(args.every)
    if not 0 <= args.gate_tolerance < 1:
        raise DataError("--gate-tolerance", f"must be in [0, 1), got {args.gate_tolerance}")
    if args.once:
        return one_round(args)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    while not stop.is_set():
        try:
            one_round(args)  # a refused or failed round leaves the live version serving; the next one tries again
        except DataError as error:
            make_console().print(f"[red]round failed: {error}")
        stop.wait(every_s)
    return 0
