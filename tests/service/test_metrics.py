"""What a Prometheus scrape shows: every request under its route and status, and with `recall serve --workers N`
the whole server from any one process."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import httpx
import pytest

from service.redis_server import EmbeddedRedis
from service.server_thread import free_port
from tests.support.service import wait_until

pytestmark = pytest.mark.integration


def request_count(exposition: str, route: str, status: int) -> float:
    pattern = rf'recall_request_seconds_count\{{method="POST",route="{re.escape(route)}",status="{status}"\}} (\S+)'
    return sum(float(value) for value in re.findall(pattern, exposition))


def test_requests_are_counted_by_route_and_status_whatever_the_answer(live_service):
    counted = [("/v1/recall", 200), ("/v1/recall", 422), ("/v1/recall", 415), ("/v1/events", 401), ("unmatched", 404)]
    with live_service.client() as client:
        before = client.get("/metrics").text  # the registry is the process's: earlier tests counted too
        for _ in range(3):
            client.post("/v1/recall", json={"user_id": 1, "k": 5})
        client.post("/v1/recall", json={"user_id": 1, "k": 0})  # 422
        client.post("/v1/recall", content=b"{}", headers={"content-type": "text/plain"})  # 415
        client.post("/v1/events", json={"events": []})  # unsigned: 401
        client.post(f"/v1/no-such-route/{'x' * 8}", json={})  # 404, under one label whatever the path
        exposition = client.get("/metrics").text
    added = {key: request_count(exposition, *key) - request_count(before, *key) for key in counted}
    assert added == {("/v1/recall", 200): 3, ("/v1/recall", 422): 1, ("/v1/recall", 415): 1,
                     ("/v1/events", 401): 1, ("unmatched", 404): 1}
    assert "no-such-route" not in exposition
    assert 'recall_request_seconds_bucket{le="0.0005",method="POST",route="/v1/recall",status="422"}' in exposition


def test_with_several_workers_any_scrape_sees_every_process(tmp_path, service_artifacts):
    from index_builder.build import build_and_publish

    build_and_publish(service_artifacts, tmp_path / "index")
    port = free_port()
    with EmbeddedRedis(tmp_path / "redis", persistence=False) as server:
        env = {**os.environ, "REDIS_URL": server.url, "RECALL_INDEX_ROOT": str(tmp_path / "index"),
               "RECALL_DATA_DIR": str(tmp_path / "var"), "RECALL_STREAM_PARTITIONS": "4"}
        serve = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--workers", "2"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: _ready(url), timeout_s=90, every_s=0.2)
            for _ in range(40):  # new connections: the kernel spreads them over both processes
                with httpx.Client(base_url=url, timeout=10) as client:
                    assert client.post("/v1/recall", json={"user_id": 1, "k": 5}).status_code == 200
            scrapes = [httpx.get(f"{url}/metrics", timeout=10).text for _ in range(6)]
        finally:
            serve.terminate()
            serve.wait(timeout=30)
    assert all(request_count(scrape, "/v1/recall", 200) == 40 for scrape in scrapes)


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    except httpx.TransportError:
        return False
