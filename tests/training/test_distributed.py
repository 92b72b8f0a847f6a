"""Data-parallel training: two real gloo processes on one machine, as `recall train --nproc 2` and torchrun run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

from training.pipeline import TrainRequest, train_run

WORLD = 2


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank_main(rank: int, port: int, events: str, items: str, out_root: str, shard_events: int | None) -> None:
    """One rank, with the environment torchrun gives it; keeps its model beside the runs for the test to compare."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    trained = train_run(TrainRequest(
        events=Path(events), items=Path(items),
        out=Path(out_root, f"run-{rank}"),
        overrides={"train.epochs": 1, "train.deterministic": True, "train.threads": 1, "train.batch_size": 32,
                   "model.dim": 32, "model.n_heads": 2, "train.shard_events": shard_events}))
    torch.save(trained.model.state_dict(), f"{out_root}/model-of-rank-{rank}.pt")


@pytest.mark.integration
@pytest.mark.parametrize("streamed", [False, True], ids=["csv-held-whole", "parquet-streamed-in-user-shards"])
def test_two_processes_train_one_model_and_only_rank_0_writes_the_run(tiny_world, tmp_path_factory, streamed):
    """With several ranks a Parquet log is always sharded by rank 0 (the other ranks never read the input); a CSV
    log is read whole by each rank."""
    inputs, tmp_path = tmp_path_factory.mktemp("inputs"), tmp_path_factory.mktemp("runs")
    events = pd.read_parquet(tiny_world / "events.parquet")
    if streamed:
        events_path = tiny_world / "events.parquet"
    else:
        events_path = inputs / "events.csv"
        events.to_csv(events_path, index=False)
    shard_events = len(events) // 4 + 1 if streamed else None  # 4 shards: 2 per rank
    mp.spawn(_rank_main, args=(_free_port(), str(events_path), str(tiny_world / "items.parquet"), str(tmp_path),
                               shard_events), nprocs=WORLD, join=True)

    # Each rank trained on its own users, yet gradients were averaged: both hold the same weights.
    states = [torch.load(tmp_path / f"model-of-rank-{rank}.pt") for rank in range(WORLD)]
    assert states[0].keys() == states[1].keys()
    for name in states[0]:
        assert torch.equal(states[0][name], states[1][name]), name
    # Rank 0 wrote its run; rank 1, asked to write elsewhere, wrote nothing (no run, no temporary directory).
    metrics = json.loads((tmp_path / "run-0" / "metrics.json").read_text())
    assert metrics["world_size"] == WORLD and metrics["data"]["user_shards"] == (4 if streamed else None)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model-of-rank-0.pt", "model-of-rank-1.pt", "run-0"]
    saved = torch.load(tmp_path / "run-0" / "model.pt")
    assert all(torch.equal(saved[name], states[0][name].cpu()) for name in saved)


def _recall_train(tiny_world, out, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cli", "train", "--events", str(tiny_world / "events.parquet"),
         "--items", str(tiny_world / "items.parquet"), "--out", str(out), "--nproc", "2", "--deterministic",
         "--batch-size", "32", *extra], capture_output=True, text=True, timeout=300, cwd=os.getcwd())


@pytest.mark.integration
def test_recall_train_nproc_2_runs_under_torchs_launcher_warm_starts_and_repeats(tiny_world, tmp_path):
    first = _recall_train(tiny_world, tmp_path / "run", "--epochs", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    assert np.isfinite(metrics["validation"]["ndcg@10"])
    assert "2 processes" in first.stdout
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run"]  # no shard or temporary directory left

    # A warm start from it, twice: deterministic at the same number of processes, and it starts from the parent.
    for name in ("again-1", "again-2"):
        warm = _recall_train(tiny_world, tmp_path / name, "--epochs", "1", "--init-from", str(tmp_path / "run"))
        assert warm.returncode == 0, warm.stderr[-3000:]
    states = [torch.load(tmp_path / name / "model.pt") for name in ("run", "again-1", "again-2")]
    assert all(torch.equal(states[1][name], states[2][name]) for name in states[1])
    assert not all(torch.equal(states[0][name], states[1][name]) for name in states[0])
    assert json.loads((tmp_path / "again-1" / "metrics.json").read_text())["parent_run"] == str(tmp_path / "run")


@pytest.mark.integration
def test_bad_input_under_the_launcher_still_exits_2_naming_the_file_row_and_column_once(write_csv, tmp_path):
    events = write_csv([{"user_id": "u1", "item_id": "i1", "action": "click"},
                        {"user_id": "u2", "item_id": "i2", "action": "zap"}])
    result = subprocess.run([sys.executable, "-m", "cli", "train", "--events", str(events), "--out",
                             str(tmp_path / "run"), "--nproc", "2"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.count(f"{events}, row 2, column 'action': unknown action 'zap'") == 1
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
