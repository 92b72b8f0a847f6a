"""The demo's offline half, made of the same use cases the `recall` commands run: data (a synthetic world, or
the user's files), a time split into history and held-out "future" events, training, export and the index."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from contract.columns import Columns
from contract.errors import DataError
from contract.table_io import read_table, write_table
from evaluation.synth import SynthConfig, write_world

HOLDOUT_FRACTION = 0.1
TRAIN_CONFIG = Path(__file__).resolve().parent / "train.toml"


@dataclass
class DemoData:
    directory: Path

    @property
    def items(self) -> Path:
        return self.directory / "items.parquet"

    @property
    def history(self) -> Path:
        return self.directory / "history.parquet"

    @property
    def holdout(self) -> Path:
        return self.directory / "holdout.parquet"

    @property
    def run(self) -> Path:
        return self.directory / "run"

    @property
    def artifacts(self) -> Path:
        return self.directory / "artifacts"

    @property
    def index(self) -> Path:
        return self.directory / "index"

    @property
    def marker(self) -> Path:
        return self.directory / "prepared.json"

    def ready(self, inputs: dict | None = None) -> bool:
        """Prepared, and (when `inputs` are given) from these same inputs."""
        if not (self.index / "CURRENT").exists() or not self.holdout.exists() or not self.marker.exists():
            return False
        return inputs is None or json.loads(self.marker.read_text()) == inputs


def split_history(events_path: Path, data: DemoData) -> None:
    """Sessions that start in the last 10% of the time become the held-out future the demo replays."""
    events = read_table(events_path, Columns.events_required)
    if Columns.timestamp not in events:
        raise DataError(str(events_path), "the demo replays held-out events in time order: a timestamp column "
                        "is needed", column=Columns.timestamp)
    keys = [Columns.user, Columns.session] if Columns.session in events else [Columns.user]
    session_start = events.groupby(keys, sort=False)[Columns.timestamp].transform("min") \
        if Columns.session in events else events[Columns.timestamp]
    cutoff = np.quantile(events[Columns.timestamp], 1.0 - HOLDOUT_FRACTION)
    future = (session_start >= cutoff).to_numpy()
    write_table(events[~future].reset_index(drop=True), data.history)
    write_table(events[future].sort_values(Columns.timestamp, kind="stable").reset_index(drop=True), data.holdout)


def prepare(directory: Path, events: Path | None = None, items: Path | None = None, users: int = 2000,
            n_items: int = 1000, epochs: int = 8, console: Console | None = None) -> DemoData:
    """Everything the service needs, under `directory` (reused when prepared from the same inputs)."""
    # Imported here: `recall demo --url` (the replayer) reads DemoData and never trains, so it skips torch.
    from index_builder.build import build_and_publish
    from model_export.export import export_run
    from training.pipeline import TrainRequest, train_run

    console = console or Console(quiet=True)
    data = DemoData(directory)
    inputs = {"events": str(events.resolve()) if events else None, "items": str(items.resolve()) if items else None,
              "users": users, "catalogue": n_items, "epochs": epochs}
    if data.ready(inputs):
        return data
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    if events is None:
        write_world(SynthConfig(n_users=users, n_items=n_items, seed=0), directory / "world")
        events, items = directory / "world" / "events.parquet", directory / "world" / "items.parquet"
    if items is not None:
        write_table(read_table(items, Columns.items_required), data.items)
    split_history(events, data)
    train_run(TrainRequest(events=data.history, out=data.run, items=data.items if items is not None else None,
                           config_file=TRAIN_CONFIG, overrides={"train.epochs": epochs}), console)
    with console.status("exporting to ONNX"):
        manifest = export_run(data.run, data.artifacts)
    console.print(f"exported model {manifest['model_version']} to {data.artifacts}")
    with console.status("building the index"):
        report = build_and_publish(data.artifacts, data.index)
    console.print(f"published {data.index}/versions/{report.version}: {report.manifest['factory']}, "
                  f"{report.manifest['recall']}")
    data.marker.write_text(json.dumps(inputs))
    return data


def read_events(path: Path) -> pd.DataFrame:
    return read_table(path, Columns.events_required)
