from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from evaluation.synth import SynthConfig, generate


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


def write_world(directory: Path, config: SynthConfig):
    events, items, world = generate(config)
    events.to_parquet(directory / "events.parquet", index=False)
    items.to_parquet(directory / "items.parquet", index=False)
    world.save(directory / "world.npz")
    return world


@pytest.fixture(scope="session")
def small_world(tmp_path_factory: pytest.TempPathFactory):
    """A synthetic world of 1,500 users and 800 items written to Parquet: (directory, world)."""
    directory = tmp_path_factory.mktemp("world")
    return directory, write_world(directory, SynthConfig(n_users=1500, n_items=800, seed=3))


def train_tiny_run(directory, run_path, encoder: str = "tbgrecall", epochs: int = 1, layout: str = "sessions"):
    """Train a small model on a world's events and save it as a run (what `recall train` writes)."""
    from contract.events import load_events
    from training.config import ModelConfig, RunConfig, TrainConfig
    from training.recommender import sample_inputs
    from training.run_dir import Run, save_run
    from training.trainer import train

    log = load_events(directory / "events.parquet", directory / "items.parquet")
    config = RunConfig(model=ModelConfig(encoder=encoder, dim=32, n_heads=2, max_len=96, layout=layout),
                       train=TrainConfig(epochs=epochs, batch_size=32, lr=3e-3, threads=2))
    result = train(log, config, protocol="temporal", show_progress=False)
    metrics = {"validation": result.metrics, "data": {"session_gap_s": 1800, "has_timestamp": True}}
    save_run(run_path, Run(model=result.model, config=config, vocabs=log.vocabs, metrics=metrics,
                           sample_inputs=sample_inputs(result.model, log)), result.history)
    return run_path


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory):
    """300 users x 200 items: for tests that need real histories, not learning."""
    directory = tmp_path_factory.mktemp("tiny_world")
    write_world(directory, SynthConfig(n_users=300, n_items=200, seed=11))
    return directory


def exported_run(root, small_world, epochs: int):
    """A TBGRecall run trained on the small world for `epochs`, exported: (run path, artifact path)."""
    from model_export.export import export_run

    directory, _ = small_world
    run = train_tiny_run(directory, root / "run", epochs=epochs)
    export_run(run, root / "artifacts")
    return run, root / "artifacts"


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory: pytest.TempPathFactory, small_world):
    """A TBGRecall run trained briefly on the small world, exported: (run path, artifact path)."""
    return exported_run(tmp_path_factory.mktemp("artifacts"), small_world, epochs=2)


@pytest.fixture(scope="session")
def service_artifacts(tmp_path_factory: pytest.TempPathFactory, small_world):
    """A TBGRecall model trained long enough to read contexts (search:<word> -> that category), exported."""
    return exported_run(tmp_path_factory.mktemp("service_model"), small_world, epochs=6)[1]
