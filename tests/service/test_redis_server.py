"""The embedded redis-server: started privately on a unix socket, stopped cleanly."""

from __future__ import annotations

import pytest
import redis

from service.redis_server import EmbeddedRedis

pytestmark = pytest.mark.integration


def test_embedded_redis_serves_on_a_private_socket_and_stops(tmp_path):
    with EmbeddedRedis(tmp_path / "redis", persistence=False) as server:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        assert server.url.startswith("unix://") and server.socket.exists()
        process = server.process
    assert process.poll() is not None  # the server is gone after the context


def test_a_relative_directory_works(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with EmbeddedRedis("relative/redis", persistence=True) as server:
        assert redis.Redis.from_url(server.url).ping()
    assert (tmp_path / "relative" / "redis" / "redis.log").exists()
