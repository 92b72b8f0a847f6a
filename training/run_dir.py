"""A training run on disk: config.json, model.pt (weights only), vocabularies.json, metrics.json, history.json,
sample_inputs.npz (real encoder inputs for the export parity check)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from contract.errors import DataError
from contract.file_io import replace_dir
from contract.vocab import Vocabularies
from training.config import RunConfig
from training.model import RecallModel


@dataclass
class Run:
    model: RecallModel
    config: RunConfig
    vocabs: Vocabularies
    metrics: dict
    path: Path | None = None
    sample_inputs: dict | None = None  # real encoder inputs, kept for the export parity check


def save_run(path: str | Path, run: Run, history: list[dict]) -> None:
    """Write the run into a temporary directory, then rename it into place: never a half-written run."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(run.model.state_dict(), tmp / "model.pt")
    (tmp / "config.json").write_text(json.dumps({**run.config.to_dict(), "sizes": run.model.sizes}, indent=2))
    run.vocabs.save(tmp / "vocabularies.json")
    (tmp / "metrics.json").write_text(json.dumps(run.metrics, indent=2))
    (tmp / "history.json").write_text(json.dumps(history, indent=2))
    if run.sample_inputs is not None:
        np.savez_compressed(tmp / "sample_inputs.npz", **run.sample_inputs)
    replace_dir(tmp, path)


def load_run(path: str | Path, device: str = "cpu") -> Run:
    path = Path(path)
    if not (path / "config.json").is_file() or not (path / "model.pt").is_file():
        raise DataError(str(path), "not a training run (config.json and model.pt expected)")
    payload = json.loads((path / "config.json").read_text())
    sizes = payload.pop("sizes")
    config = RunConfig.from_dict(payload)
    model = RecallModel(config.model, sizes)
    model.load_state_dict(torch.load(path / "model.pt", map_location=device, weights_only=True))
    model.eval()
    metrics = json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").exists() else {}
    sample = None
    if (path / "sample_inputs.npz").exists():
        with np.load(path / "sample_inputs.npz", allow_pickle=False) as arrays:
            sample = {name: arrays[name] for name in arrays.files}
    return Run(model=model, config=config, vocabs=Vocabularies.load(path / "vocabularies.json"), metrics=metrics,
               path=path, sample_inputs=sample)
