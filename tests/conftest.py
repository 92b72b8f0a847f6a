"""Fixtures every layer shares: hand-written CSVs, small synthetic worlds and models trained on them."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from evaluation.synth import SynthConfig, write_world
from tests.support.runs import exported_run


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
    return directory, write_world(SynthConfig(n_users=1500, n_items=800, seed=3), directory)[2]


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory):
    """300 users x 200 items: for tests that need real histories, not learning."""
    directory = tmp_path_factory.mktemp("tiny_world")
    write_world(SynthConfig(n_users=300, n_items=200, seed=11), directory)
    return directory


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory: pytest.TempPathFactory, small_world):
    """An untrained TBGRecall run on the small world, exported: (run path, artifact path). Its tests need the
    files and shapes of an export and a second model version, not quality; `service_artifacts` is the trained one."""
    return exported_run(tmp_path_factory.mktemp("artifacts"), small_world, epochs=0)


@pytest.fixture(scope="session")
def service_artifacts(tmp_path_factory: pytest.TempPathFactory, small_world):
    """A TBGRecall model trained long enough to read contexts (search:<word> -> that category), exported."""
    return exported_run(tmp_path_factory.mktemp("service_model"), small_world, epochs=6)[1]
