"""`recall demo --once` end to end on a small world: data, training, export, index, the embedded service, the
signed replay, and a report whose numbers are present and sane."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def test_demo_once_reports_recall_above_popularity_and_applies_every_event(tmp_path):
    from service.server_thread import free_port

    report_path = tmp_path / "report.json"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RECALL_") and k != "REDIS_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--data", str(tmp_path / "demo"), "--users", "600",
         "--catalogue", "300", "--epochs", "10", "--replay-users", "150", "--k", "50", "--once", "--json",
         str(report_path), "--port", str(free_port())],
        env=clean, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["k"] == 50 and report["users"] > 50
    assert report["events_replayed"] > 10_000
    assert report["events_applied"] == report["events_accepted"] == report["events_replayed"]
    assert report["recall_at_k"] > report["popularity_recall_at_k"] > 0
    assert 0 < report["latency_ms"]["p50"] <= report["latency_ms"]["p99"]
    assert 0 <= report["freshness_ms"]["p50"] <= report["freshness_ms"]["p99"] and report["freshness_missed"] == 0
    assert "Live replay through the service" in result.stdout and "candidates by context" in result.stdout
