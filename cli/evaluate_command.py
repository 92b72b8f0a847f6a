"""`recall evaluate`: baselines and a trained run on a split of an events file."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cli.console import make_console
from cli.data_commands import add_data_arguments
from contract.errors import DataError

BASELINES = ("popular", "context-popular", "oracle")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("evaluate", help="Recall/NDCG/HitRate/MRR/coverage of models on a split")
    add_data_arguments(parser)
    parser.add_argument("--protocol", choices=("loo", "temporal"), default="temporal",
                        help="temporal: predict the next session after a time split; loo: each user's last")
    parser.add_argument("--model", default="popular,context-popular",
                        help=f"comma-separated, from {', '.join(BASELINES)} (oracle needs --world)")
    parser.add_argument("--run", type=Path, help="a trained run (recall train) to evaluate beside the baselines")
    parser.add_argument("--world", type=Path, help="world.npz of a synthetic data set, for the oracle")
    parser.add_argument("--k", default="10,50,100", help="comma-separated cut-offs")
    parser.add_argument("--test-fraction", type=float, default=0.1,
                        help="temporal: share of the latest events held out")
    parser.add_argument("--cold-users", action="store_true",
                        help="temporal: also evaluate users with no history before the split (context only)")
    parser.add_argument("--filter-viewed", action=argparse.BooleanOptionalAction, default=True,
                        help="drop items the user already clicked from the recommendations")
    parser.add_argument("--json", dest="json_path", nargs="?", const="-", default=None,
                        help="print JSON instead of tables (or write it to the given path)")
    parser.set_defaults(handler=run_evaluate)


def parse_ks(text: str) -> list[int]:
    try:
        ks = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise DataError("--k", f"must be comma-separated integers, got {text!r}") from None
    if not ks or ks[0] < 1:
        raise DataError("--k", "needs positive cut-offs")
    return ks


def run_evaluate(args: argparse.Namespace) -> int:
    """Load, split, fit the baselines on the training part, print the comparison table (or JSON)."""
    from contract.events import load_events
    from evaluation.evaluate import evaluate, print_results, results_to_json
    from evaluation.splits import leave_one_out, temporal_split
    from training.recommender import EncoderRecommender
    from training.run_dir import load_run

    ks = parse_ks(args.k)
    names = [name.strip() for name in args.model.split(",") if name.strip()]
    unknown = [name for name in names if name not in BASELINES]
    if unknown or not names:
        raise DataError("--model", f"unknown {', '.join(unknown) or '(none)'} (choose from {', '.join(BASELINES)})")
    if "oracle" in names and args.world is None:
        raise DataError("--model", "oracle needs --world (a synthetic world.npz)")
    console = make_console()
    run = load_run(args.run) if args.run else None
    with console.status(f"loading {args.events}"):
        log = load_events(args.events, args.items, session_gap_s=args.session_gap,
                          vocabs=run.vocabs if run else None)
    if args.protocol == "temporal" and not log.has_timestamp:
        raise DataError(str(args.events), "the temporal protocol needs timestamps; use --protocol loo",
                        column="timestamp")
    split = leave_one_out(log) if args.protocol == "loo" else temporal_split(
        log, test_fraction=args.test_fraction, include_cold_users=args.cold_users)
    if len(split.cases) == 0:
        raise DataError(str(args.events), "no user has a click, cart or pay to predict after the split")
    models = [_baseline(name, split, args.world) for name in names]
    if run is not None:
        models.append(EncoderRecommender(run.model, split.train, name=f"{run.config.model.encoder} ({args.run.name})"))
    results = evaluate(split, models, ks, filter_viewed=args.filter_viewed)
    if args.json_path is None:
        print_results(console, split, results, ks)
        return 0
    payload = json.dumps(results_to_json(split, results, ks, args.filter_viewed), indent=2)
    if args.json_path == "-":
        print(payload)  # noqa: T201
    else:
        Path(args.json_path).write_text(payload)
    return 0


def _baseline(name: str, split, world_path: Path | None):
    from evaluation.popularity import ContextPopularModel, PopularModel

    if name == "popular":
        return PopularModel().fit(split.train)
    if name == "context-popular":
        return ContextPopularModel().fit(split.train)
    from evaluation.synth import OracleModel, SyntheticWorld

    return OracleModel(SyntheticWorld.load(world_path), split.train.vocabs)
