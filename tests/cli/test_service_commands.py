"""`recall serve` and `recall worker` refuse a bad environment with exit code 2 and the variable's name;
`recall serve` alone gives a working service, with one API process or several."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.service import SECRET, post_events, wait_until

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


def test_serve_refuses_fewer_than_one_worker():
    result = run_recall("serve", "--workers", "0", env={})
    assert result.returncode == 2
    assert "--workers" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_runs_embedded_and_stops_its_redis_on_exit(tmp_path, service_artifacts, workers):
    """One command gives a working service: a private redis-server and the near-line worker (in the API process,
    or once in the parent of several), so an event becomes a user vector any process serves; Ctrl-C stops it all,
    API processes included."""
    from index_builder.build import build_and_publish
    from service.server_thread import free_port

    build_and_publish(service_artifacts, tmp_path / "index")
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RECALL_") and k != "REDIS_URL"}
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--workers",
                                str(workers)],
                               env={**clean, "RECALL_INDEX_ROOT": str(tmp_path / "index"),
                                    "RECALL_DATA_DIR": str(tmp_path / "var"), "RECALL_WEBHOOK_SECRET": SECRET},
                               stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                ready = httpx.get(f"{url}/readyz")
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.2)
        assert ready.json()["embedded"] is True
        assert (tmp_path / "var" / "redis" / "redis.sock").exists()
        child_processes = children(process.pid)  # redis-server and, with several, the API processes
        assert len(api_children(process.pid)) == (workers if workers > 1 else 0)
        with httpx.Client(base_url=url, timeout=30) as client:
            event = {"user_id": "u1", "item_id": 3, "action": "click", "timestamp": int(time.time()) - 60}
            assert post_events(client, [event]).json()["accepted"] == 1
            wait_until(lambda: all(client.post("/v1/recall", json={"user_id": "u1", "k": 5}).json()["vector_source"]
                                   == "precomputed" for _ in range(4 * workers)))
            encoded = [line for line in client.get("/metrics").text.splitlines()
                       if line.startswith("worker_users_encoded_total ")]
            assert encoded and float(encoded[0].split()[1]) >= 1  # the worker's counter, whichever process answers
            if workers > 1:  # an API process that dies is replaced, and every process answers again
                killed = api_children(process.pid)[0]
                os.kill(killed, signal.SIGKILL)
                wait_until(lambda: len(api := api_children(process.pid)) == workers and killed not in api,
                           timeout_s=30)
                child_processes += api_children(process.pid)
                wait_until(lambda: all(_ready(client) for _ in range(8 * workers)), timeout_s=120, every_s=0.5)
                # A second `recall serve` on this port is refused, not let in beside this one.
                refused = run_recall("serve", "--port", str(port), "--workers", "2",
                                     env={"RECALL_INDEX_ROOT": str(tmp_path / "index"),
                                          "RECALL_DATA_DIR": str(tmp_path / "other")})
                assert refused.returncode == 2 and "--port" in refused.stderr, refused.stderr
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        log.close()
    assert process.returncode == 0
    assert not (tmp_path / "var" / "redis" / "redis.sock").exists()  # redis-server removed its socket on exit
    # Every child is gone (multiprocessing's resource tracker may outlive the parent by a moment).
    wait_until(lambda: not [pid for pid in child_processes if alive(pid)], timeout_s=10)


def test_a_killed_serve_takes_its_processes_with_it(tmp_path, service_artifacts):
    """`recall serve` killed outright (SIGKILL: no chance to stop anything) leaves no API process or redis-server
    behind to hold the port and the data directory."""
    from index_builder.build import build_and_publish
    from service.server_thread import free_port

    build_and_publish(service_artifacts, tmp_path / "index")
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("RECALL_") and k != "REDIS_URL"}
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--workers", "2"],
                               env={**clean, "RECALL_INDEX_ROOT": str(tmp_path / "index"),
                                    "RECALL_DATA_DIR": str(tmp_path / "var")},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            wait_until(lambda: _ready(client), timeout_s=120, every_s=0.2)
        child_processes = children(process.pid)
        assert len(api_children(process.pid)) == 2 and len(child_processes) >= 3  # and redis-server
    finally:
        process.kill()
        process.wait(timeout=30)
    wait_until(lambda: not [pid for pid in child_processes if alive(pid)], timeout_s=30)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=2) as client:
        assert not _ready(client)


def children(pid: int) -> list[int]:
    return [int(child) for child in
            Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def api_children(pid: int) -> list[int]:
    """The API processes `recall serve` spawned (multiprocessing's resource tracker is a child too)."""
    spawned = []
    for child in children(pid):
        try:
            if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes():
                spawned.append(child)
        except OSError:  # it exited meanwhile
            pass
    return spawned


def _ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.HTTPError:
        return False


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
