"""`recall publish`: export, index, quality gate and publish in one step; a worse model never goes live."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cli.main import main
from index_builder.versions import current_version, kept_versions
from tests.support.runs import train_tiny_run

pytestmark = pytest.mark.integration  # trains models and exports them through ONNX


@pytest.fixture(scope="module")
def shuffled_run(tmp_path_factory, small_world):
    """A model trained as long as the service's, on the same events with every item id replaced by another's:
    it learns sequences of the wrong items, so it is worse on the real events."""
    directory, _ = small_world
    shuffled = tmp_path_factory.mktemp("shuffled_world")
    events = pd.read_parquet(directory / "events.parquet")
    ids = np.sort(events.item_id.unique())
    permuted = dict(zip(ids, np.random.default_rng(0).permutation(ids), strict=True))
    events.assign(item_id=events.item_id.map(permuted)).to_parquet(shuffled / "events.parquet", index=False)
    pd.read_parquet(directory / "items.parquet").to_parquet(shuffled / "items.parquet", index=False)
    return train_tiny_run(shuffled, shuffled / "run", epochs=6)


def test_publish_gates_a_worse_model_out_and_lets_a_good_one_in(tmp_path, service_artifacts, shuffled_run,
                                                                 small_world, capsys):
    directory, _ = small_world
    good_run, root, events = service_artifacts.parent / "run", tmp_path / "index", directory / "events.parquet"
    # Nothing live: the gate has nothing to compare with and passes.
    assert main(["publish", "--run", str(good_run), "--index", str(root), "--gate-events", str(events)]) == 0
    assert "no live version" in capsys.readouterr().out
    live = current_version(root)
    gate = json.loads((root / "versions" / live / "manifest.json").read_text())["gate"]
    assert gate["passed"] and gate["live"] is None and gate["candidate"] > 0

    assert main(["publish", "--run", str(shuffled_run), "--index", str(root), "--gate-events", str(events)]) == 3
    refusal = capsys.readouterr().out
    assert "not published" in refusal and f"{gate['candidate']:.4f}" in refusal  # both figures, one line
    assert current_version(root) == live and kept_versions(root) == [live]  # nothing under the root changed

    assert main(["publish", "--run", str(good_run), "--index", str(root), "--gate-events", str(events)]) == 0
    second = current_version(root)
    gate = json.loads((root / "versions" / second / "manifest.json").read_text())["gate"]
    assert second != live and gate["passed"] and gate["candidate"] == pytest.approx(gate["live"])


def test_publish_without_a_gate_and_a_bad_tolerance(tmp_path, service_artifacts, capsys):
    good_run, root = service_artifacts.parent / "run", tmp_path / "index"
    assert main(["publish", "--run", str(good_run), "--index", str(root), "--gate-tolerance", "1.5"]) == 2
    assert "--gate-tolerance" in capsys.readouterr().err and current_version(root) is None
    assert main(["publish", "--run", str(good_run), "--index", str(root)]) == 0
    manifest = json.loads((root / "versions" / current_version(root) / "manifest.json").read_text())
    assert manifest["gate"] is None and manifest["model"]["run"] == str(good_run.resolve())


def test_gate_events_without_a_case_are_one_clear_error(tmp_path, service_artifacts, small_world, capsys):
    """A window of the archive where nobody has two sessions gives the gate nothing to score: exit 2 naming the
    file, not a traceback, and nothing published."""
    directory, _ = small_world
    good_run, root = service_artifacts.parent / "run", tmp_path / "index"
    events = pd.read_parquet(directory / "events.parquet")
    one_session_each = events.drop_duplicates("user_id").assign(timestamp=1_764_000_000)
    one_session_each.to_parquet(tmp_path / "recent.parquet", index=False)
    assert main(["publish", "--run", str(good_run), "--index", str(root), "--gate-events",
                 str(tmp_path / "recent.parquet")]) == 2
    error = capsys.readouterr().err
    assert "recent.parquet" in error and "two sessions" in error and "Traceback" not in error
    assert current_version(root) is None
