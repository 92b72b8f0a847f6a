"""`recall train`: train an encoder on a data-contract file into a run directory."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from rich.table import Table

from cli.console import make_console
from cli.data_commands import add_data_arguments
from training.config import ENCODERS, RETRIEVAL_LOSSES
from training.errors import DataError


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("train", help="train a user encoder (TBGRecall, SASRec or BERT4Rec)")
    add_data_arguments(parser)
    parser.add_argument("--out", required=True, type=Path, help="run directory to write")
    parser.add_argument("--encoder", choices=ENCODERS, help="default: tbgrecall")
    parser.add_argument("--loss", choices=RETRIEVAL_LOSSES, help="retrieval loss (default: chosen for the log)")
    parser.add_argument("--config", type=Path, help="TOML file with [model], [loss] and [train] tables")
    parser.add_argument("--epochs", type=int, help="upper bound; early stopping usually ends sooner")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--init-from", type=Path, help="warm-start from this run (incremental training)")
    parser.add_argument("--recency-days", type=float, help="train on the last N days of events only")
    parser.add_argument("--protocol", choices=("loo", "temporal"),
                        help="validation holdout for early stopping (default: temporal when there are timestamps)")
    parser.add_argument("--deterministic", action="store_true", help="seeded, reproducible run")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--time-budget", type=float, default=30.0,
                        help="minutes of training; the settings are chosen to fit it (default: %(default)s)")
    parser.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    """Pick settings for the log, train, validate with early stopping, and write the run (weights, config,
    vocabularies, metrics, and the settings chosen with their reasons)."""
    from training.contract import load_events
    from training.recommender import sample_inputs
    from training.run_dir import Run, load_run, save_run
    from training.trainer import train

    console = make_console()
    parent = load_run(args.init_from) if args.init_from else None
    file_settings = _read_config_file(args.config)
    with console.status(f"loading {args.events}"):
        log = load_events(args.events, args.items, session_gap_s=args.session_gap,
                          vocabs=parent.vocabs if parent else None)
    config, choices = _config(args, parent, file_settings, log)
    print_choices(console, choices)
    if config.train.recency_days > 0 and log.has_timestamp:
        log = log.take(log.timestamp >= log.timestamp.max() - config.train.recency_days * 86_400)
    protocol = args.protocol or ("temporal" if log.has_timestamp else "loo")
    console.print(f"training {config.model.encoder} ({config.loss.retrieval}) on {len(log):,} events, "
                  f"validating on a {protocol} holdout")
    result = train(log, config, protocol=protocol,
                   init_state=parent.model.state_dict() if parent else None)
    metrics = {"validation": result.metrics, "protocol": protocol, "events": len(log),
               "data": {"session_gap_s": args.session_gap, "has_timestamp": log.has_timestamp},
               "settings_chosen": [asdict(choice) for choice in choices],
               "train_seconds": round(result.seconds, 1),
               "sequences_per_second": round(result.sequences_per_second, 1),
               "parent_run": str(args.init_from) if args.init_from else None}
    model = result.model.cpu()
    save_run(args.out, Run(model=model, config=config, vocabs=log.vocabs, metrics=metrics,
                           sample_inputs=sample_inputs(model, log)), result.history)
    best = result.metrics.get(f"ndcg@{config.train.eval_k}", 0.0)
    console.print(f"wrote {args.out}: validation NDCG@{config.train.eval_k} {best:.4f} after "
                  f"{len(result.history)} epochs, {result.seconds:.0f} s, {result.sequences_per_second:.0f} seq/s")
    return 0


def print_choices(console, choices: list) -> None:
    table = Table(title="settings chosen for this log (flags and --config override them)")
    for column in ("setting", "value", "why"):
        table.add_column(column)
    for choice in choices:
        table.add_row(choice.setting, str(choice.value), choice.why)
    console.print(table)


def _read_config_file(path: Path | None) -> dict:
    from training.config import read_toml

    if path is None:
        return {}
    try:
        return read_toml(path)
    except (OSError, ValueError) as error:
        raise DataError(str(path), str(error)) from None


def _config(args: argparse.Namespace, parent, file_settings: dict, log):
    """Layers, each over the one before: the settings chosen for this log, the --config file, the flags. With
    --init-from the architecture is the parent's. Returns (config, the chosen settings nothing overrode)."""
    import torch

    from training.auto_config import default_config
    from training.trainer import pick_device

    device = pick_device(args.device or file_settings.get("train", {}).get("device", "auto"))
    if args.threads:
        torch.set_num_threads(args.threads)
    chosen, choices = default_config(log, args.time_budget * 60, device)
    try:
        config = chosen.updated(file_settings)
    except (TypeError, ValueError) as error:
        raise DataError(str(args.config), str(error)) from None
    if parent is not None:
        if args.encoder not in (None, parent.config.model.encoder):
            raise DataError("--encoder", f"{args.encoder} cannot warm-start from {args.init_from}, a "
                                         f"{parent.config.model.encoder} run; leave --encoder out or train afresh")
        config.model = parent.config.model  # the architecture is the parent's; only the data grows
    overrides = {("model", "encoder"): args.encoder, ("loss", "retrieval"): args.loss,
                 ("train", "epochs"): args.epochs, ("train", "batch_size"): args.batch_size,
                 ("train", "recency_days"): args.recency_days, ("train", "seed"): args.seed,
                 ("train", "device"): args.device, ("train", "threads"): args.threads}
    for (section, name), value in overrides.items():
        if value is not None:
            setattr(getattr(config, section), name, value)
    if args.deterministic:
        config.train.deterministic = True
    try:
        config.validate()
    except ValueError as error:
        raise DataError(str(args.config or "command line"), str(error)) from None
    # SASRec and BERT4Rec read no layout and have no future heads: TBGRecall's model choices do not apply to them.
    kept = [choice for choice in choices if _value(config, choice.setting) == choice.value
            and (config.model.encoder == "tbgrecall" or not choice.setting.startswith("model."))]
    return config, kept


def _value(config, setting: str):
    section, name = setting.split(".")
    return getattr(getattr(config, section), name)
