"""`recall data synth` and `recall data stats`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.console import make_console
from contract.errors import DataError


def register(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="make or inspect data sets").add_subparsers(
        dest="data_command", required=True, metavar="DATA_COMMAND")
    synth = data.add_parser("synth", help="write a synthetic e-commerce world (events, items, ground truth)")
    synth.add_argument("--out", required=True, type=Path, help="directory to write into")
    synth.add_argument("--users", type=int, default=10_000, help="users in the world")
    synth.add_argument("--items", type=int, default=5_000, help="items in its catalogue")
    synth.add_argument("--seed", type=int, default=0, help="the same seed writes the same world")
    synth.add_argument("--sessions-per-user", type=float, default=6.0, help="mean sessions per user")
    synth.set_defaults(handler=run_synth)
    stats = data.add_parser("stats", help="statistics of an events file that follows the data contract")
    add_data_arguments(stats)
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.set_defaults(handler=run_stats)


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every command that reads the data contract takes."""
    parser.add_argument("--events", required=True, type=Path,
                        help="events file (.csv, .csv.gz or .parquet), or a directory of Parquet files read "
                             "recursively as one log (an archive)")
    parser.add_argument("--items", type=Path, help="items file (item_id, category, seller, title)")
    parser.add_argument("--session-gap", type=int, default=30 * 60,
                        help="seconds of inactivity that start a new session when the file has no session_id")


def run_synth(args: argparse.Namespace) -> int:
    """Write events.parquet, items.parquet and world.npz (the ground truth the oracle reads) into --out."""
    from evaluation.synth import SynthConfig, write_world

    if args.users < 1 or args.items < 2:
        raise DataError("--users/--items", "need at least 1 user and 2 items")
    if args.out.exists() and not args.out.is_dir():  # before minutes of generating, not after
        raise DataError(str(args.out), "exists and is not a directory")
    console = make_console()
    config = SynthConfig(n_users=args.users, n_items=args.items, seed=args.seed,
                         mean_sessions=args.sessions_per_user)
    with console.status(f"generating {args.users:,} users x {args.items:,} items"):
        events, items, _ = write_world(config, args.out)
    console.print(f"wrote {len(events):,} events and {len(items):,} items to {args.out}")
    return 0


def run_stats(args: argparse.Namespace) -> int:
    """Print what a user checks first: sizes, sessions, the action mix, contexts and the time range."""
    from contract.events import load_events
    from contract.stats import dataset_stats, print_stats

    console = make_console(stderr=args.json)
    with console.status(f"loading {args.events}"):
        log = load_events(args.events, args.items, session_gap_s=args.session_gap)
    if args.json:
        print(json.dumps(dataset_stats(log), indent=2, default=str))  # noqa: T201
    else:
        print_stats(console, dataset_stats(log), title=f"{args.events}")
    return 0
