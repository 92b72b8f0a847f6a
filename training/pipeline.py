"""The offline use cases the CLI and the demo call: train a run, and recommend from one.

A training run's settings come in layers, each over the one before: the settings chosen for the log
(training/auto_config.py), a TOML file, then explicit overrides (the CLI's flags). With `init_from` the
architecture is the parent run's, and only the data grows.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

from contract.columns import DEFAULT_SESSION_GAP_S
from contract.errors import DataError
from contract.events import EventLog, load_events
from contract.user_shards import UserShards, count_rows, is_streamable, write_user_shards
from evaluation.splits import EvalCases, viewed_items
from training import distributed
from training.auto_config import Choice, default_config
from training.config import RunConfig, TrainConfig, read_toml
from training.model import RecallModel
from training.recommender import EncoderRecommender, last_contexts, sample_inputs
from training.run_dir import Run, load_run, save_run
from training.trainer import TrainResult, pick_device, train


@dataclass
class TrainRequest:
    events: Path
    out: Path
    items: Path | None = None
    session_gap_s: int = DEFAULT_SESSION_GAP_S
    config_file: Path | None = None
    # "section.field" -> value, over the chosen settings and the file; None values are ignored.
    overrides: dict[str, object] = field(default_factory=dict)
    init_from: Path | None = None  # warm-start from this run (incremental training)
    time_budget_s: float = 30 * 60
    protocol: str | None = None  # loo | temporal; default: temporal when the log has timestamps


@dataclass
class TrainedRun:
    path: Path
    model: RecallModel  # on every rank: the kept one on rank 0
    config: RunConfig
    validation: dict
    epochs: int
    seconds: float
    sequences_per_second: float


def train_run(request: TrainRequest, console: Console | None = None) -> TrainedRun:
    """Pick settings for the log, train, validate with early stopping, and write the run (weights, config,
    vocabularies, metrics, and the settings chosen with their reasons).

    A Parquet log of more than `train.shard_events` events is split into shards of whole users on disk and
    streamed, a shard at a time (contract/user_shards.py). Under a launcher (`recall train --nproc N`, torchrun)
    every process trains on its own users, and rank 0 alone prints, validates and writes the run."""
    console = console or Console(quiet=True)
    parent = load_run(request.init_from) if request.init_from else None
    file_settings = _read_config_file(request.config_file)
    distributed.join_from_environment(pick_device(_setting(request, file_settings, "device", "auto")))
    rank, world = distributed.rank_and_world()
    if rank != 0:
        console = Console(quiet=True)
    shard_dir = Path(distributed.from_main(str(shard_directory(request.out))))  # rank 0's: it writes the shards
    try:
        log = _open_log(request, parent, file_settings, shard_dir, world, console)
        protocol = request.protocol or ("temporal" if log.has_timestamp else "loo")
        config, choices = _from_main(*layered_config(request, parent, file_settings, log, protocol))
        print_choices(console, choices)
        if isinstance(log, EventLog) and config.train.recency_days > 0 and log.has_timestamp:
            log = log.take(log.timestamp >= log.timestamp.max() - config.train.recency_days * 86_400)
        events = len(log) if isinstance(log, EventLog) else log.events
        layout = "in memory" if isinstance(log, EventLog) else f"streamed in {log.n_shards} user shards"
        console.print(f"training {config.model.encoder} ({config.loss.retrieval}) on {events:,} events "
                      f"({layout}, {world} process{'es' if world > 1 else ''}), validating on a {protocol} holdout")
        result = train(log, config, protocol=protocol, init_state=parent.model.state_dict() if parent else None)
        if rank == 0:
            _save(request, config, choices, log, result, protocol, world)
        distributed.barrier()  # the run is written before any rank reports success
    finally:
        if rank == 0:
            shutil.rmtree(shard_dir, ignore_errors=True)
        distributed.leave()
    return TrainedRun(path=request.out, model=result.model, config=config, validation=result.metrics,
                      epochs=len(result.history), seconds=result.seconds,
                      sequences_per_second=result.sequences_per_second)


def shard_directory(out: Path) -> Path:
    """Where a streamed run's user shards live while it trains: beside the run, hidden, removed at the end."""
    return out.with_name(f".{out.name}.shards")


def _from_main(config: RunConfig, choices: list[Choice]) -> tuple[RunConfig, list[Choice]]:
    """Rank 0's settings on every rank: the choice times this machine's matmuls, so ranks could pick apart."""
    chosen = distributed.from_main({"config": config.to_dict(), "choices": [asdict(choice) for choice in choices]})
    return RunConfig.from_dict(chosen["config"]), [Choice(**choice) for choice in chosen["choices"]]


def _save(request: TrainRequest, config: RunConfig, choices: list[Choice], log: EventLog | UserShards,
          result: TrainResult, protocol: str, world: int) -> None:
    sample_log = log if isinstance(log, EventLog) else log.load(0)
    metrics = {"validation": result.metrics, "protocol": protocol,
               "events": len(log) if isinstance(log, EventLog) else log.events,
               "data": {"session_gap_s": request.session_gap_s, "has_timestamp": log.has_timestamp,
                        "user_shards": None if isinstance(log, EventLog) else log.n_shards},
               "settings_chosen": [asdict(choice) for choice in choices],
               "world_size": world,
               "item_content": result.model.content_stats,
               "train_seconds": round(result.seconds, 1),
               "sequences_per_second": round(result.sequences_per_second, 1),
               "parent_run": str(request.init_from) if request.init_from else None}
    model = result.model.cpu()
    save_run(request.out, Run(model=model, config=config, vocabs=log.vocabs, metrics=metrics,
                              sample_inputs=sample_inputs(model, sample_log)), result.history)


def _open_log(request: TrainRequest, parent: Run | None, file_settings: dict, shard_dir: Path, world: int,
              console: Console) -> EventLog | UserShards:
    """The log held whole, or sharded by user on disk: Parquet past `train.shard_events` events, and any Parquet
    log with several ranks, so that rank 0 alone reads the input (an archive that grows while the job starts
    cannot give two ranks two logs). The other ranks wait and open rank 0's shards."""
    shard_events = _setting(request, file_settings, "shard_events", TrainConfig.shard_events)
    if type(shard_events) is not int or shard_events < 1:
        raise DataError(str(request.config_file or "--shard-events"),
                        f"train.shard_events must be a positive integer, got {shard_events!r}")
    vocabs = parent.vocabs if parent else None
    rows = count_rows(request.events) if distributed.is_main() and is_streamable(request.events) else 0
    if not distributed.from_main(rows > shard_events or (world > 1 and rows > 0)):
        with console.status(f"loading {request.events}"):
            return load_events(request.events, request.items, session_gap_s=request.session_gap_s, vocabs=vocabs)
    if distributed.is_main():
        shutil.rmtree(shard_dir, ignore_errors=True)
        # A whole number of shards per rank: the ranks stop an epoch together, when the first runs out of batches.
        shards = math.ceil(max(1, math.ceil(rows / shard_events)) / world) * world
        write_user_shards(request.events, request.items, shard_dir, math.ceil(rows / shards),
                          request.session_gap_s, vocabs, show_progress=console.is_terminal)
    distributed.barrier()
    return UserShards.open(shard_dir)


def _setting(request: TrainRequest, file_settings: dict, name: str, default: object) -> object:
    """A [train] setting as the run will have it, where it is needed before the log is read."""
    explicit = request.overrides.get(f"train.{name}")
    return explicit if explicit is not None else file_settings.get("train", {}).get(name, default)


def print_choices(console: Console, choices: list[Choice]) -> None:
    table = Table(title="settings chosen for this log (flags and --config override them)")
    for column in ("setting", "value", "why"):
        table.add_column(column)
    for choice in choices:
        table.add_row(choice.setting, str(choice.value), choice.why)
    console.print(table)


def _read_config_file(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        return read_toml(path)
    except (OSError, ValueError) as error:
        raise DataError(str(path), str(error)) from None


TBGRECALL_ONLY = ("model.layout", "model.n_future_sessions")


def layered_config(request: TrainRequest, parent: Run | None, file_settings: dict, log: EventLog | UserShards,
                   protocol: str) -> tuple[RunConfig, list[Choice]]:
    """The run's configuration, and the chosen settings nothing overrode."""
    overrides = {setting: value for setting, value in request.overrides.items() if value is not None}
    device = pick_device(overrides.get("train.device") or file_settings.get("train", {}).get("device", "auto"))
    if overrides.get("train.threads"):
        torch.set_num_threads(int(overrides["train.threads"]))
    chosen, choices = default_config(log, request.time_budget_s, device, protocol)
    source = str(request.config_file or "command line")
    try:
        config = chosen.updated(file_settings)
    except (TypeError, ValueError) as error:
        raise DataError(source, str(error)) from None
    if parent is not None:
        encoder = overrides.get("model.encoder")
        if encoder not in (None, parent.config.model.encoder):
            raise DataError("--encoder", f"{encoder} cannot warm-start from {request.init_from}, a "
                                         f"{parent.config.model.encoder} run; leave --encoder out or train afresh")
        config.model = parent.config.model
    for setting, value in overrides.items():
        section, name = setting.split(".")
        setattr(getattr(config, section), name, value)
    try:
        config.validate()
    except ValueError as error:
        raise DataError(source, str(error)) from None
    # SASRec and BERT4Rec read no layout and have no future heads; the item tower (attributes) they share.
    kept = [choice for choice in choices if _value(config, choice.setting) == choice.value
            and (config.model.encoder == "tbgrecall" or choice.setting not in TBGRECALL_ONLY)]
    return config, kept


def _value(config: RunConfig, setting: str):
    section, name = setting.split(".")
    return getattr(getattr(config, section), name)


def recommend(run_path: Path, events: Path, items: Path | None = None, session_gap_s: int = DEFAULT_SESSION_GAP_S,
              users: list[str] | None = None, k: int = 100, context: str | None = None,
              filter_viewed: bool = True) -> pd.DataFrame:
    """user_id, item_id, rank (1 = best), score: the top-k of every requested user (default: every user of the
    log). Unknown users get a context-only (cold-start) vector."""
    run = load_run(run_path)
    log = load_events(events, items, session_gap_s=session_gap_s, vocabs=run.vocabs)
    user_codes = log.active_users.astype(np.int32) if users is None else \
        log.vocabs.users.encode(np.asarray(users, dtype=object), grow=True)
    last_context, last_scenario = last_contexts(log, user_codes)
    contexts = np.full(len(user_codes), run.vocabs.contexts.code_of(context)) if context else last_context
    now = np.full(len(user_codes), int(log.timestamp.max()) if log.has_timestamp else 0, dtype=np.int64)
    cases = EvalCases(user=user_codes, context=contexts, scenario=last_scenario, request_time=now,
                      target_offsets=np.zeros(len(user_codes) + 1, dtype=np.int64),
                      target_items=np.zeros(0, np.int32))
    viewed = viewed_items(log, user_codes) if filter_viewed else None
    scores, found_items = EncoderRecommender(run.model, log).recommend(cases, k, viewed)
    found = found_items > 0
    return pd.DataFrame({
        "user_id": np.repeat(run.vocabs.users.decode(user_codes), found.sum(axis=1)),
        "item_id": run.vocabs.items.decode(found_items[found]),
        "rank": np.nonzero(found)[1] + 1,
        "score": np.round(scores[found], 6),
    })
