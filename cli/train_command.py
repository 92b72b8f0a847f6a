"""`recall train`: train an encoder on a data-contract file into a run directory."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cli.console import make_console
from cli.data_commands import add_data_arguments
from contract.errors import DataError
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
    parser.add_argument("--nproc", type=int, default=1,
                        help="data-parallel processes on this machine (torch.distributed: gloo on CPU, NCCL on "
                             "GPU); each trains on its own users. For several machines run this command under "
                             "torchrun (README)")
    parser.add_argument("--shard-events", type=int,
                        help="a Parquet log with more events is streamed in user shards of about this many events "
                             "(default: 2,000,000); peak memory follows the shard, not the log")
    parser.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    if args.nproc < 1:
        raise DataError("--nproc", f"must be 1 or more, got {args.nproc}")
    if args.nproc > 1 and "WORLD_SIZE" not in os.environ:  # the launcher's children run this command again
        for path in (args.events, args.items, args.config):
            if path is not None and not path.exists():  # said once, before starting processes that would each say it
                raise DataError(str(path), "file not found")
        return launch(args.nproc, args.argv, args.out)
    from training.pipeline import TrainRequest, train_run

    overrides = {"model.encoder": args.encoder, "loss.retrieval": args.loss, "train.epochs": args.epochs,
                 "train.batch_size": args.batch_size, "train.recency_days": args.recency_days,
                 "train.seed": args.seed, "train.device": args.device, "train.threads": args.threads,
                 "train.deterministic": True if args.deterministic else None,
                 "train.shard_events": args.shard_events}
    request = TrainRequest(events=args.events, out=args.out, items=args.items, session_gap_s=args.session_gap,
                           config_file=args.config, overrides=overrides, init_from=args.init_from,
                           time_budget_s=args.time_budget * 60, protocol=args.protocol)
    console = make_console()
    trained = train_run(request, console)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    eval_k = trained.config.train.eval_k
    best = trained.validation.get(f"ndcg@{eval_k}", 0.0)
    refit_epochs = trained.validation.get("refit_epochs")
    refit = ("" if refit_epochs is None else f", refit on everything for {refit_epochs} epochs" if refit_epochs
             else ", no refit (it would have ended past the time budget)")
    console.print(f"wrote {args.out}: validation NDCG@{eval_k} {best:.4f} after {trained.epochs} epochs{refit}, "
                  f"{trained.seconds:.0f} s, {trained.sequences_per_second:.0f} seq/s")
    return 0


def launch(nproc: int, argv: list[str], out: Path) -> int:
    """Run this same command in `nproc` local processes under torch's launcher (what `torchrun` runs); the exit code
    is the worst failed rank's (2 for bad input, as alone; 1 for a rank killed by a signal)."""
    import logging
    import shutil

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    from training.pipeline import shard_directory

    command = [arg for i, arg in enumerate(argv) if arg != "--nproc" and (i == 0 or argv[i - 1] != "--nproc")
               and not arg.startswith("--nproc=")]
    # The cores shared out among the processes; the launcher would give each one thread, with a banner.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # a failed rank has said why
    try:
        torchrun(["--standalone", f"--nproc-per-node={nproc}", "-m", "cli", *command])
    except ChildFailedError as error:
        return max(max(failure.exitcode for failure in error.failures.values()), 1)
    finally:
        shutil.rmtree(shard_directory(out), ignore_errors=True)  # a rank stopped by a signal leaves them
    return 0
