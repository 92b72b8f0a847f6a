"""Faults the service must survive, each injected for real: a `recall worker` process SIGKILLed mid-batch, Redis
absent at start-up, Redis restarted under load, a corrupt or partial index version, an index of another model."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest
import redis

from service.ingest import normalise
from service.models import Event
from service.redis_server import EmbeddedRedis
from service.server_thread import free_port
from service.serving_model import ModelHolder
from service.store.keys import Keys
from service.store.streams import append_events
from tests.support.service import (
    LiveService,
    WorkerThreads,
    applied_sessions,
    expected_sessions,
    hourly_events,
    post_events,
    service_settings,
    wait_until,
)

pytestmark = pytest.mark.integration


def recall_env(settings, **extra: str) -> dict[str, str]:
    return {**os.environ, "RECALL_INDEX_ROOT": str(settings.index_root),
            "RECALL_STREAM_PARTITIONS": str(settings.stream_partitions),
            "RECALL_WORKER_LEASE_MS": str(settings.worker_lease_ms), **extra}


@pytest.fixture
def published_index(tmp_path, service_artifacts):
    from index_builder.build import build_and_publish

    build_and_publish(service_artifacts, tmp_path / "index")
    return tmp_path / "index"


def test_a_worker_process_sigkilled_mid_batch_loses_nothing_and_applies_nothing_twice(tmp_path, published_index):
    """Real SIGKILLs of `recall worker` processes while they hold unacknowledged messages. A kill rarely lands in
    the microseconds between a state write and its acknowledgement; test_worker.py kills exactly there.
    Few users per partition, so a batch holds several consecutive events of one user: re-applying its older
    events after the newer ones would show in the history."""
    users = [f"k{n}" for n in range(8)]
    events = hourly_events(users, per_user=40)
    with EmbeddedRedis(tmp_path / "redis", persistence=False) as server:
        settings = service_settings(tmp_path, redis_url=server.url, worker_lease_ms=1000, worker_read_count=8)
        keys = Keys(settings.key_prefix, settings.stream_partitions)
        client = redis.Redis.from_url(server.url)
        assert append_events(client, keys, [normalise(Event(**e), time.time()) for e in events], 3600) == len(events)
        env = recall_env(settings, REDIS_URL=server.url, RECALL_WORKER_READ_COUNT="8")
        kills_mid_batch = 0
        for _ in range(10):  # each kill lands wherever the worker is; kill until one catches a batch in flight
            worker = subprocess.Popen([sys.executable, "-m", "cli.main", "worker", "--metrics-port", "0"], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            before = sum(map(len, applied_sessions(client, keys, users).values()))
            wait_until(lambda before=before: sum(map(len, applied_sessions(client, keys, users).values()))
                       > before + 8, timeout_s=60, every_s=0.005)
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
            pending = sum(client.xpending(stream, keys.group)["pending"] for stream in keys.all_streams())
            kills_mid_batch += pending > 0
            if kills_mid_batch >= 2:
                break
        assert kills_mid_batch >= 1
        survivor = subprocess.Popen([sys.executable, "-m", "cli.main", "worker", "--metrics-port", "0"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: applied_sessions(client, keys, users) == expected_sessions(events), timeout_s=90)
            assert sum(client.xpending(stream, keys.group)["pending"] for stream in keys.all_streams()) == 0
        finally:
            survivor.send_signal(signal.SIGTERM)
            survivor.wait(timeout=30)


def test_redis_absent_at_start_up_is_one_clear_error_after_retries(tmp_path, published_index):
    settings = service_settings(tmp_path)
    nowhere = f"redis://127.0.0.1:{free_port()}"
    for command in (["serve", "--port", str(free_port())], ["worker", "--metrics-port", "0"]):
        finished = subprocess.run([sys.executable, "-m", "cli.main", *command], capture_output=True, text=True,
                                  env=recall_env(settings, REDIS_URL=nowhere, RECALL_REDIS_CONNECT_TIMEOUT_S="1"),
                                  timeout=60)
        assert finished.returncode == 2, finished.stderr
        assert "waiting for Redis" in finished.stderr  # it retried
        assert "REDIS_URL" in finished.stderr and "did not answer within 1 s" in finished.stderr
        assert "Traceback" not in finished.stderr


def test_the_api_waits_for_a_redis_that_comes_up_late(tmp_path, published_index):
    settings = service_settings(tmp_path)
    late = EmbeddedRedis(tmp_path / "late-redis", persistence=False)
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("w") as stderr:
        api = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port)],
                               env=recall_env(settings, REDIS_URL=late.url), stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_until(lambda: "waiting for Redis" in log.read_text(), timeout_s=60, every_s=0.1)  # it is retrying
        assert api.poll() is None
        with late:
            wait_until(lambda: _ready(f"http://127.0.0.1:{port}"), timeout_s=60, every_s=0.2)
    finally:
        api.send_signal(signal.SIGTERM)
        api.wait(timeout=30)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_redis_restarted_under_load_degrades_then_recovers_without_losing_events(tmp_path, published_index):
    """While Redis restarts, /v1/recall answers from its declared fallback and the webhook answers 503 with
    Retry-After (never a 500); afterwards both recover without a restart, and every accepted event is applied."""
    users = [f"r{n}" for n in range(30)]
    events = hourly_events(users, per_user=30)  # 45 batches, sent over the whole restart
    server = EmbeddedRedis(tmp_path / "redis").start()  # AOF on: a restart keeps the streams
    settings = service_settings(tmp_path, redis_url=server.url)
    workers = WorkerThreads(settings, count=1)
    service = LiveService(settings).start()
    recall_statuses, fallbacks, event_statuses, stop = [], set(), [], threading.Event()

    def ask():
        with service.client() as client:
            while not stop.is_set():
                response = client.post("/v1/recall", json={"user_id": "r1", "k": 10})
                recall_statuses.append(response.status_code)
                if response.status_code == 200:
                    fallbacks.add(response.json()["fallback"])

    def send():  # a client that retries on 503/429, as the webhook's contract asks
        with service.client() as client:
            for start in range(0, len(events), 20):
                while True:
                    response = post_events(client, events[start:start + 20])
                    event_statuses.append(response.status_code)
                    if response.status_code == 202:
                        break
                    time.sleep(float(response.headers.get("retry-after", "0.2")) / 5)
                time.sleep(0.05)

    try:
        threads = [threading.Thread(target=ask), threading.Thread(target=send)]
        for thread in threads:
            thread.start()
        time.sleep(0.5)
        server.stop()
        time.sleep(1.5)
        server.start()
        threads[1].join(timeout=120)
        time.sleep(0.5)
        stop.set()
        threads[0].join(timeout=30)
        assert 500 not in recall_statuses and set(recall_statuses) <= {200, 503}
        assert "redis_unavailable" in fallbacks
        assert set(event_statuses) <= {202, 503} and 503 in event_statuses
        keys = Keys(settings.key_prefix, settings.stream_partitions)
        store = redis.Redis.from_url(server.url)
        wait_until(lambda: applied_sessions(store, keys, users) == expected_sessions(events), timeout_s=60)
        with service.client() as client:
            answer = client.post("/v1/recall", json={"user_id": "r1", "k": 10}).json()
            assert answer["fallback"] is None and answer["vector_source"] == "precomputed"
            assert client.get("/readyz").status_code == 200
    finally:
        stop.set()
        service.stop()
        workers.stop()
        server.stop()


def test_a_corrupt_or_partial_index_version_is_refused_and_the_old_pair_keeps_serving(live_embedded):
    service, root = live_embedded
    with service.client() as client:
        live = client.post("/v1/recall", json={"user_id": 1, "k": 10}).json()["index_version"]
        versions = root / "versions"
        corrupt = versions / "corrupt"
        shutil.copytree(versions / live, corrupt)
        data = bytearray((corrupt / "index.faiss").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (corrupt / "index.faiss").write_bytes(bytes(data))
        partial = versions / "partial"
        partial.mkdir()
        shutil.copy(versions / live / "manifest.json", partial / "manifest.json")
        for bad in ("corrupt", "partial", "missing"):
            (root / "CURRENT").write_text(bad)
            refused = wait_until(lambda bad=bad: (ready := client.get("/readyz").json())["refused_index"]
                                 and ready["refused_index"].startswith(bad) and ready["refused_index"])
            assert {"corrupt": "checksum", "partial": "index.faiss", "missing": "missing"}[bad] in refused
            worker_side = ModelHolder(service.settings, with_index=False)  # a worker encodes, never searches...
            assert not worker_side.refresh() and worker_side.current is None  # ...and refuses the same versions
            answer = client.post("/v1/recall", json={"user_id": 1, "k": 10})
            assert answer.status_code == 200 and answer.json()["index_version"] == live


def test_an_index_of_another_model_is_never_paired_with_this_encoder(live_embedded, tiny_artifacts):
    """A version holding another model's index beside this model's encoder (hand-assembled, checksums matching):
    refused, and the live pair keeps answering."""
    from bench.reliability import mixed_version

    service, root = live_embedded
    _, other_artifacts = tiny_artifacts
    with service.client() as client:
        live = client.post("/v1/recall", json={"user_id": 1, "k": 10}).json()
        mixed = mixed_version(root, live["index_version"], other_artifacts, "mixed")
        (root / "CURRENT").write_text(mixed.name)
        refused = wait_until(lambda: client.get("/readyz").json()["refused_index"])
        assert "must not be mixed" in refused
        answer = client.post("/v1/recall", json={"user_id": 1, "k": 10}).json()
        assert (answer["model_version"], answer["index_version"]) == (live["model_version"], live["index_version"])


@pytest.fixture
def live_embedded(tmp_path, published_index):
    service = LiveService(service_settings(tmp_path)).start()
    yield service, published_index
    service.stop()


def test_a_full_redis_refuses_events_with_503_and_loses_none(tmp_path, published_index):
    """Redis at its memory limit with noeviction (compose's setting): the webhook answers 503 with Retry-After
    and writes nothing (no half-appended batch, no event remembered as seen), /v1/recall still answers, and the
    client's retry after memory is freed is applied exactly once."""
    users = [f"m{n}" for n in range(5)]
    events = hourly_events(users, per_user=6)
    with EmbeddedRedis(tmp_path / "redis", persistence=False) as server:
        settings = service_settings(tmp_path, redis_url=server.url)
        store = redis.Redis.from_url(server.url)
        workers = WorkerThreads(settings, count=1)
        service = LiveService(settings).start()
        keys = Keys(settings.key_prefix, settings.stream_partitions)
        try:
            with service.client() as client:
                store.config_set("maxmemory-policy", "noeviction")
                store.config_set("maxmemory", 1)  # below what is used: every write is refused
                before = written(store, keys)
                refused = post_events(client, events)
                assert refused.status_code == 503 and refused.headers["retry-after"]
                assert client.post("/v1/recall", json={"user_id": "m1", "k": 5}).status_code == 200
                assert written(store, keys) == before
                store.config_set("maxmemory", 0)
                accepted = post_events(client, events)
                assert accepted.status_code == 202 and accepted.json()["accepted"] == len(events)
                wait_until(lambda: applied_sessions(store, keys, users) == expected_sessions(events), timeout_s=60)
        finally:
            store.config_set("maxmemory", 0)
            service.stop()
            workers.stop()


def written(store: redis.Redis, keys: Keys) -> tuple[int, int]:
    """(keys, stream entries ever added): an appended entry or a remembered event id changes one of them."""
    return store.dbsize(), sum(store.xinfo_stream(stream)["entries-added"] for stream in keys.all_streams())
