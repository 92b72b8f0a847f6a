"""`recall serve` and `recall worker` refuse a bad environment with exit code 2 and the variable's name."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = pytest.mark.integration


def run_recall(*arguments: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RECALL_") and k != "REDIS_URL"}
    return subprocess.run([sys.executable, "-m", "cli.main", *arguments], env={**clean, **env}, capture_output=True,
                          text=True, timeout=120)


def test_worker_without_redis_url_is_a_clear_error():
    result = run_recall("worker", env={})
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr and "Traceback" not in result.stderr


def test_a_bad_setting_names_its_variable():
    result = run_recall("serve", env={"RECALL_STREAM_PARTITIONS": "many"})
    assert result.returncode == 2
    assert "RECALL_STREAM_PARTITIONS" in result.stderr and "Traceback" not in result.stderr


def test_serve_with_several_workers_needs_a_shared_redis():
    result = run_recall("serve", "--workers", "2", env={})
    assert result.returncode == 2 and "REDIS_URL" in result.stderr


def test_serve_runs_embedded_and_stops_its_redis_on_exit(tmp_path, service_artifacts):
    """One command gives a working service: private redis-server, worker in process; Ctrl-C stops both."""
    from index_builder.build import build_and_publish
    from service.server_thread import free_port

    build_and_publish(service_artifacts, tmp_path / "index")
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RECALL_") and k != "REDIS_URL"}
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port)],
                               env={**clean, "RECALL_INDEX_ROOT": str(tmp_path / "index"),
                                    "RECALL_DATA_DIR": str(tmp_path / "var")},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz")
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read().decode()
            time.sleep(0.2)
        assert ready.json()["embedded"] is True
        assert (tmp_path / "var" / "redis" / "redis.sock").exists()
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert process.returncode == 0
    assert not (tmp_path / "var" / "redis" / "redis.sock").exists()  # redis-server removed its socket on exit
