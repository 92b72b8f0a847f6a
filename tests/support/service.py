"""Helpers of the service tests: a live server on loopback, signed event posts, waiting, expected histories,
and worker threads that behave as separate worker processes would."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest
import redis

from service.ingest import signed_headers
from service.server_thread import ServerThread
from service.settings import Settings
from service.store.keys import Keys
from service.store.user_state import read_histories

SECRET = "test-webhook-secret"
# Runs a test that takes `live_service` twice: embedded, and scaled out (Redis Cluster, 3 workers).
scaled_out = pytest.mark.parametrize("live_service", ["embedded", "cluster"], indirect=True)


class LiveService(ServerThread):
    def client(self) -> httpx.Client:
        """A client that sends the API key when the service has one (tests of the key itself send their own)."""
        key = self.settings.api_key
        headers = {"X-API-Key": key.get_secret_value()} if key is not None else {}
        return httpx.Client(base_url=self.url, timeout=30, headers=headers)


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


class WorkerThreads:
    """`count` near-line workers, each with its own Redis client and model holder, as separate processes would."""

    def __init__(self, settings: Settings, count: int):
        from service.serving_model import ModelHolder
        from service.store.connection import connect_redis
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
