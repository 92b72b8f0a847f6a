from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from training.synth import SynthConfig, generate


@pytest.fixture
def write_csv(tmp_path: Path):
    """Write a small hand-built table to a CSV file and return its path."""

    def write(rows: list[dict] | pd.DataFrame, name: str = "events.csv") -> Path:
        path = tmp_path / name
        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        if name.endswith(".parquet"):
            frame.to_parquet(path, index=False)
        else:
            frame.to_csv(path, index=False)
        return path

    return write


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory):
    """A synthetic world of 1,500 users and 800 items written to Parquet: (directory, world)."""
    directory = tmp_path_factory.mktemp("world")
    events, items, world = generate(SynthConfig(n_users=1500, n_items=800, seed=3))
    events.to_parquet(directory / "events.parquet", index=False)
    items.to_parquet(directory / "items.parquet", index=False)
    world.save(directory / "world.npz")
    return directory, world
