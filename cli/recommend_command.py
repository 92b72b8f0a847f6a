"""`recall recommend`: batch candidate generation for the users of an events file."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from cli.console import make_console
from cli.data_commands import add_data_arguments
from training.errors import DataError


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("recommend", help="top-k candidates per user from a trained run")
    parser.add_argument("--run", required=True, type=Path)
    add_data_arguments(parser)
    parser.add_argument("--users", type=Path, help="CSV with a user_id column (or one id per line); default: all")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--context", help="the next session's context; default: each user's last context")
    parser.add_argument("--filter-viewed", action=argparse.BooleanOptionalAction, default=True,
                        help="leave out items the user already acted on, as /v1/recall does (default: on)")
    parser.add_argument("--out", required=True, type=Path, help="CSV: user_id,item_id,rank,score")
    parser.set_defaults(handler=run_recommend)


def run_recommend(args: argparse.Namespace) -> int:
    """Write user_id,item_id,rank,score (original ids, rank 1 = best) for every requested user."""
    from training.contract import load_events
    from training.recommender import EncoderRecommender, last_contexts
    from training.run_dir import load_run
    from training.splits import EvalCases, viewed_items
    from training.table_io import write_table

    if args.k < 1:
        raise SystemExit("recall recommend: error: --k must be at least 1")
    console = make_console()
    run = load_run(args.run)
    with console.status(f"loading {args.events}"):
        log = load_events(args.events, args.items, session_gap_s=args.session_gap, vocabs=run.vocabs)
    users = _requested_users(args.users, log)
    last_context, last_scenario = last_contexts(log, users)
    context = np.full(len(users), run.vocabs.contexts.code_of(args.context)) if args.context else last_context
    now = np.full(len(users), int(log.timestamp.max()) if log.has_timestamp else 0, dtype=np.int64)
    cases = EvalCases(user=users, context=context, scenario=last_scenario, request_time=now,
                      target_offsets=np.zeros(len(users) + 1, dtype=np.int64), target_items=np.zeros(0, np.int32))
    viewed = viewed_items(log, users) if args.filter_viewed else None
    with console.status(f"encoding {len(users):,} users"):
        scores, items = EncoderRecommender(run.model, log).recommend(cases, args.k, viewed)
    found = items > 0
    rows = pd.DataFrame({
        "user_id": np.repeat(run.vocabs.users.decode(users), found.sum(axis=1)),
        "item_id": run.vocabs.items.decode(items[found]),
        "rank": np.nonzero(found)[1] + 1,
        "score": np.round(scores[found], 6),
    })
    write_table(rows, args.out)
    console.print(f"wrote {len(rows):,} candidates for {len(users):,} users to {args.out}")
    return 0


def _requested_users(path: Path | None, log) -> np.ndarray:
    if path is None:
        return log.active_users.astype(np.int32)
    try:
        frame = pd.read_csv(path, dtype=str)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(str(path), f"cannot read users: {error}") from None
    column = "user_id" if "user_id" in frame.columns else None
    ids = frame[column] if column else pd.concat([pd.Series([frame.columns[0]]), frame.iloc[:, 0]])
    ids = ids.dropna().astype(str).str.strip()
    if ids.empty:
        raise DataError(str(path), "no user ids")
    # Unknown users get a fresh code: no history, so a context-only (cold-start) vector.
    return log.vocabs.users.encode(ids.to_numpy(), grow=True)
