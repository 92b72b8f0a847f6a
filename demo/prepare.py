"""The demo's offline half, made of the same `recall` commands a user runs: data (a synthetic world, or the
user's files), a time split into history and held-out "future" events, training, export and the index."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from training.columns import Columns
from training.errors import DataError
from training.table_io import read_table, write_table

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


def run_command(*arguments: str) -> None:
    from cli.main import main

    if main(list(arguments)) != 0:
        raise RuntimeError(f"`recall {' '.join(arguments)}` failed")


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
            n_items: int = 1000, epochs: int = 8) -> DemoData:
    """Everything the service needs, under `directory` (reused when prepared from the same inputs)."""
    data = DemoData(directory)
    inputs = {"events": str(events.resolve()) if events else None, "items": str(items.resolve()) if items else None,
              "users": users, "catalogue": n_items, "epochs": epochs}
    if data.ready(inputs):
        return data
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    if events is None:
        run_command("data", "synth", "--out", str(directory / "world"), "--users", str(users), "--items",
                    str(n_items), "--seed", "0")
        events, items = directory / "world" / "events.parquet", directory / "world" / "items.parquet"
    if items is not None:
        write_table(read_table(items, Columns.items_required), data.items)
    split_history(events, data)
    item_arguments = ["--items", str(data.items)] if items is not None else []
    run_command("train", "--events", str(data.history), *item_arguments, "--out", str(data.run),
                "--config", str(TRAIN_CONFIG), "--epochs", str(epochs))
    run_command("export", "--run", str(data.run), "--out", str(data.artifacts))
    run_command("build-index", "--artifacts", str(data.artifacts), "--out", str(data.index))
    data.marker.write_text(json.dumps(inputs))
    return data


def read_events(path: Path) -> pd.DataFrame:
    return read_table(path, Columns.events_required)
