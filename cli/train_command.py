"""`recall train`: train an encoder on a data-contract file into a run directory."""

from __future__ import annotations

import argparse
from pathlib import Path

from cli.console import make_console
from cli.data_commands import add_data_arguments
from training.config import ENCODERS, RETRIEVAL_LOSSES


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train a user encoder (TBGRecall, SASRec or BERT4Rec)")
    add_data_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, help="run directory to write")
    parser.add_argument("--encoder", choices=ENCODERS, help="default: tbgrecall")
    parser.add_argument("--loss", choices=RETRIEVAL_LOSSES, help="retrieval loss (default: chosen for the log)")
    parser.add_argument("--config", type=Path, help="TOML file with [model], [loss] and [train] tables")
    parser.add_argument("--epochs", type=int, help="upper bound; early stopping usually ends sooner")
    parser.add_argument("--batch-size", type=int, help="sequences per step; default: chosen for the log")
    parser.add_argument("--init-from", type=Path, help="warm-start from this run (incremental training)")
    parser.add_argument("--recency-days", type=float, help="train on the last N days of events only")
    parser.add_argument("--protocol", choices=("loo", "temporal"),
                        help="validation holdout for early stopping (default: temporal when there are timestamps)")
    parser.add_argument("--deterministic", action="store_true", help="seeded, reproducible run")
    parser.add_argument("--seed", type=int, help="seed of the initialisation and the batch order")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="auto: a GPU when one is visible")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--time-budget", type=float, default=30.0,
                        help="minutes of training; the settings are chosen to fit it (default: %(default)s)")
    parser.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    from training.pipeline import TrainRequest, train_run

    overrides = {"model.encoder": args.encoder, "loss.retrieval": args.loss, "train.epochs": args.epochs,
                 "train.batch_size": args.batch_size, "train.recency_days": args.recency_days,
                 "train.seed": args.seed, "train.device": args.device, "train.threads": args.threads,
                 "train.deterministic": True if args.deterministic else None}
    request = TrainRequest(events=args.events, out=args.out, items=args.items, session_gap_s=args.session_gap,
                           config_file=args.config, overrides=overrides, init_from=args.init_from,
                           time_budget_s=args.time_budget * 60, protocol=args.protocol)
    console = make_console()
    trained = train_run(request, console)
    eval_k = trained.config.train.eval_k
    best = trained.validation.get(f"ndcg@{eval_k}", 0.0)
    console.print(f"wrote {args.out}: validation NDCG@{eval_k} {best:.4f} after {trained.epochs} epochs, "
                  f"{trained.seconds:.0f} s, {trained.sequences_per_second:.0f} seq/s")
    return 0
