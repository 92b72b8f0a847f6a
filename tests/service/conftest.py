"""A live service for integration tests: a real redis-server, real onnxruntime and FAISS, uvicorn on loopback.

`live_service` runs every test that uses it twice: embedded (a private redis-server and the worker in the API
process) and scaled out (a 3-node Redis Cluster with 3 workers sharing the stream partitions)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from service.ingest import signed_headers
from service.keys import Keys
from service.server_thread import ServerThread
from service.settings import Settings
from service.user_state import read_histories

SECRET = "test-webhook-secret"


class LiveService(ServerThread):
    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


def post_events(client: httpx.Client, events: list[dict], secret: str = SECRET,
                timestamp: int | None = None) -> httpx.Response:
    body = orjson.dumps({"events": events})
    return client.post("/v1/events", content=body, headers=signed_headers(secret, body, timestamp))


def wait_until(predicate, timeout_s: float = 30.0, every_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError("condition not met in time")


START = int(time.time()) - 30 * 86_400


def hourly_events(users: list[str], per_user: int) -> list[dict]:
    """Each event its own session, an hour after the previous one, with an item that names its position: a lost
    event leaves a gap and one applied twice adds a session, so a history shows both."""
    return [{"user_id": user, "item_id": 1 + (i * 7 + n) % 150, "timestamp": START + 3600 * i, "action": "click",
             "event_id": f"{user}-{i}"} for i in range(per_user) for n, user in enumerate(users)]


def applied_sessions(client: redis.Redis, keys: Keys, users: list[str]) -> dict[str, list[tuple]]:
    """Each user's sessions as (start, items): an event applied again lands in the newest session's items."""
    return {user: [(session["start"], [item for item, _ in session["items"]]) for session in state.history["sessions"]]
            for user, state in zip(users, read_histories(client, keys, users), strict=True)}


def expected_sessions(events: list[dict]) -> dict[str, list[tuple]]:
    expected: dict[str, list[tuple]] = {}
    for event in events:
        expected.setdefault(event["user_id"], []).append((event["timestamp"], [str(event["item_id"])]))
    return expected


def service_settings(directory: Path, **overrides) -> Settings:
    values = {"redis_url": None, "data_dir": directory / "var", "index_root": directory / "index",
              "webhook_secret": SECRET, "stream_partitions": 4, "worker_lease_ms": 1500, "index_poll_s": 0.2,
              **overrides}
    return Settings(**values)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """One 3-node Redis Cluster for the session; each test keeps to its own key prefix."""
    from tests.support.redis_cluster import LocalRedisCluster

    with LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster"), nodes=3) as cluster:
        yield cluster


class WorkerThreads:
    """`count` near-line workers, each with its own Redis client and model holder, as separate processes would."""

    def __init__(self, settings: Settings, count: int):
        from service.connection import connect_redis
        from service.serving_model import ModelHolder
        from service.worker import NearlineWorker

        self.stop_event = threading.Event()
        self.holders = [ModelHolder(settings, with_index=False).start() for _ in range(count)]
        self.workers = [NearlineWorker(connect_redis(settings.redis_url, settings.redis_cluster), settings, holder,
                                       name=f"worker-{n}") for n, holder in enumerate(self.holders)]
        self.threads = [threading.Thread(target=worker.run, args=(self.stop_event,), daemon=True)
                        for worker in self.workers]
        for thread in self.threads:
            thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=10)
        for holder in self.holders:
            holder.stop()


@pytest.fixture(params=["embedded", "cluster"])
def live_service(request, tmp_path, service_artifacts):
    """The service over a freshly published index: embedded, or against the Redis Cluster with 3 workers."""
    from index_builder.build import build_and_publish

    build_and_publish(service_artifacts, tmp_path / "index")
    if request.param == "embedded":
        service = LiveService(service_settings(tmp_path)).start()
        yield service
        service.stop()
        return
    cluster = request.getfixturevalue("redis_cluster")
    settings = service_settings(tmp_path, redis_url=cluster.url, redis_cluster=True,
                                key_prefix=f"t{uuid.uuid4().hex[:8]}")
    workers = WorkerThreads(settings, count=3)
    service = LiveService(settings).start()
    yield service
    service.stop()
    workers.stop()
