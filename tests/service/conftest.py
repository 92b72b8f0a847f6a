"""A live service for integration tests: a real redis-server, real onnxruntime and FAISS, uvicorn on loopback."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import orjson
import pytest

from service.ingest import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from service.server_thread import ServerThread
from service.settings import Settings

SECRET = "test-webhook-secret"


class LiveService(ServerThread):
    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


def post_events(client: httpx.Client, events: list[dict], secret: str = SECRET,
                timestamp: int | None = None) -> httpx.Response:
    body = orjson.dumps({"events": events})
    sent_at = str(timestamp if timestamp is not None else int(time.time()))
    return client.post("/v1/events", content=body, headers={
        "content-type": "application/json", TIMESTAMP_HEADER: sent_at, SIGNATURE_HEADER: sign(secret, sent_at, body)})


def wait_until(predicate, timeout_s: float = 30.0, every_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError("condition not met in time")


def service_settings(directory: Path, **overrides) -> Settings:
    values = {"redis_url": None, "data_dir": directory / "var", "index_root": directory / "index",
              "webhook_secret": SECRET, "stream_partitions": 4, "worker_lease_ms": 1500, "index_poll_s": 0.2,
              **overrides}
    return Settings(**values)


@pytest.fixture
def live_service(tmp_path, service_artifacts):
    """An embedded service (private Redis + worker in process) over a freshly published index."""
    from index_builder.build import build_and_publish

    build_and_publish(service_artifacts, tmp_path / "index")
    service = LiveService(service_settings(tmp_path)).start()
    yield service
    service.stop()
