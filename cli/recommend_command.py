"""`recall recommend`: batch candidate generation for the users of an events file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from cli.console import make_console
from cli.data_commands import add_data_arguments
from contract.errors import DataError


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("recommend", help="top-k candidates per user from a trained run")
    parser.add_argument("--run", required=True, type=Path, help="a run directory written by recall train")
    add_data_arguments(parser)
    parser.add_argument("--users", type=Path, help="CSV with a user_id column (or one id per line); default: all")
    parser.add_argument("--k", type=int, default=100, help="candidates per user")
    parser.add_argument("--context", help="the next session's context; default: each user's last context")
    parser.add_argument("--filter-viewed", action=argparse.BooleanOptionalAction, default=True,
                        help="leave out items the user already acted on, as /v1/recall does (default: on)")
    parser.add_argument("--out", required=True, type=Path,
                        help="CSV or Parquet: user_id,item_id,rank,score; - writes CSV to stdout")
    parser.set_defaults(handler=run_recommend)


def run_recommend(args: argparse.Namespace) -> int:
    """Write user_id,item_id,rank,score (original ids, rank 1 = best) for every requested user."""
    from contract.table_io import write_table
    from training.pipeline import recommend

    if args.k < 1:
        raise DataError("--k", "must be at least 1")
    to_stdout = str(args.out) == "-"
    console = make_console(stderr=to_stdout)
    users = _requested_users(args.users)
    with console.status(f"recommending from {args.run}"):
        rows = recommend(args.run, args.events, args.items, args.session_gap, users, args.k, args.context,
                         args.filter_viewed)
    if to_stdout:
        rows.to_csv(sys.stdout, index=False)
    else:
        write_table(rows, args.out)
    console.print(f"wrote {len(rows):,} candidates for {rows['user_id'].nunique():,} users to "
                  f"{'stdout' if to_stdout else args.out}")
    return 0


def _requested_users(path: Path | None) -> list[str] | None:
    if path is None:
        return None
    try:
        frame = pd.read_csv(path, dtype=str)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(str(path), f"cannot read users: {error}") from None
    column = "user_id" if "user_id" in frame.columns else None
    ids = frame[column] if column else pd.concat([pd.Series([frame.columns[0]]), frame.iloc[:, 0]])
    ids = ids.dropna().astype(str).str.strip()
    if ids.empty:
        raise DataError(str(path), "no user ids")
    return ids.tolist()
