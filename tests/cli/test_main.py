"""The `recall` command line as a user runs it: outputs, JSON, and exit code 2 with a clear message."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd

from cli.main import main


def test_synth_writes_a_world_that_stats_and_evaluate_read(tmp_path, capsys):
    out = tmp_path / "world"
    assert main(["data", "synth", "--out", str(out), "--users", "300", "--items", "200", "--seed", "1"]) == 0
    assert {p.name for p in out.iterdir()} >= {"events.parquet", "items.parquet", "world.npz", "world.json"}
    events = pd.read_parquet(out / "events.parquet")
    assert set(events.columns) >= {"user_id", "session_id", "timestamp", "item_id", "action", "context", "scenario"}
    assert main(["data", "stats", "--events", str(out / "events.parquet")]) == 0
    assert "sessions per user" in capsys.readouterr().out


def test_evaluate_json_has_every_metric_per_model_and_context(small_world, capsys):
    directory, _ = small_world
    code = main(["evaluate", "--events", str(directory / "events.parquet"), "--items",
                 str(directory / "items.parquet"), "--protocol", "temporal",
                 "--model", "popular,context-popular,oracle", "--world", str(directory / "world.npz"),
                 "--k", "10,50", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["models"]) == {"popular", "context-popular", "oracle (ground truth)"}
    overall = report["models"]["popular"]["overall"]
    assert set(overall) == {"recall@10", "recall@50", "ndcg@10", "ndcg@50", "hitrate@10", "hitrate@50", "mrr",
                            "coverage@50"}
    assert set(report["models"]["popular"]["by_context"]) == {"search", "home", "cart"}


def test_evaluate_table_for_leave_one_out(small_world, capsys):
    directory, _ = small_world
    assert main(["evaluate", "--events", str(directory / "events.parquet"), "--protocol", "loo"]) == 0
    output = capsys.readouterr().out
    assert "loo split" in output and "context-popular" in output and "Recall@100" in output


def test_bad_file_exits_2_naming_file_row_and_column(tmp_path):
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,timestamp\n1,2,2026-01-01\n1,3,not-a-time\n")
    result = subprocess.run([sys.executable, "-m", "cli", "evaluate", "--events", str(path)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert f"{path}, row 2, column 'timestamp'" in result.stderr
    assert "Traceback" not in result.stderr


def test_temporal_protocol_without_timestamps_is_a_clear_error(write_csv, capsys):
    path = write_csv([{"user_id": 1, "item_id": 1}, {"user_id": 1, "item_id": 2}])
    assert main(["evaluate", "--events", str(path), "--protocol", "temporal"]) == 2
    assert "needs timestamps" in capsys.readouterr().err
