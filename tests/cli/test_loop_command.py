"""`recall loop`: a round trains on the archive, warm-started from the live version's run, and publishes through
the gate."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cli.main import main
from index_builder.build import build_and_publish
from index_builder.versions import current_version
from service.archive import _write_part


@pytest.mark.e2e  # a (short) training round, an export and two gate evaluations
def test_a_round_warm_starts_from_the_live_run_and_publishes_through_the_gate(tmp_path, service_artifacts,
                                                                              small_world, capsys):
    directory, _ = small_world
    live = build_and_publish(service_artifacts, tmp_path / "index")
    events = pd.read_parquet(directory / "events.parquet")
    archive = tmp_path / "archive"
    for hour, part in enumerate(events.groupby(events.index // (len(events) // 3 + 1))):
        rows = part[1].assign(action=part[1].action.map({"show": 0, "click": 1, "cart": 2, "pay": 3}),
                              event_id=part[1].event_id.astype(str), user_id=part[1].user_id.astype(str),
                              item_id=part[1].item_id.astype(str), session_id=part[1].session_id.astype(str))
        _write_part(archive / "date=2026-12-03" / f"hour={hour:02d}" / "part-00000001.parquet",
                    rows.to_dict("records"))
    code = main(["loop", "--once", "--archive", str(archive), "--index", str(tmp_path / "index"),
                 "--runs", str(tmp_path / "runs"), "--time-budget", "0.2", "--gate-tolerance", "0.5"])
    assert code == 0, capsys.readouterr().out
    (run,) = (tmp_path / "runs").iterdir()
    assert json.loads((run / "metrics.json").read_text())["parent_run"] == str(service_artifacts.parent / "run")
    version = current_version(tmp_path / "index")
    manifest = json.loads((tmp_path / "index" / "versions" / version / "manifest.json").read_text())
    assert version != live.version and manifest["gate"]["passed"] and manifest["gate"]["live"] is not None


def test_a_round_with_no_archive_yet_trains_nothing_and_a_bad_period_is_refused(tmp_path, capsys):
    assert main(["loop", "--once", "--archive", str(tmp_path / "archive"), "--index", str(tmp_path / "index"),
                 "--runs", str(tmp_path / "runs")]) == 0
    assert "no archived events yet" in capsys.readouterr().out and not (tmp_path / "runs").exists()
    assert main(["loop", "--archive", str(tmp_path), "--index", str(tmp_path), "--runs", str(tmp_path),
                 "--every", "daily"]) == 2
    assert "--every" in capsys.readouterr().err
