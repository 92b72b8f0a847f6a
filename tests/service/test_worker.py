"""The near-line worker's delivery guarantees against a real redis-server: a worker that dies mid-batch loses no
event, and none is applied twice."""

from __future__ import annotations

import time

import pytest
import redis

from service.ingest import Event, normalise
from service.keys import Keys
from service.redis_server import EmbeddedRedis
from service.serving_model import ModelHolder
from service.streams import append_events, stream_backlog
from service.user_state import read_state
from service.worker import NearlineWorker
from tests.service.conftest import service_settings, wait_until

USERS, EVENTS_PER_USER = [f"u{n}" for n in range(12)], 6


@pytest.fixture
def worker_setup(tmp_path, service_artifacts):
    from index_builder.build import build_and_publish

    build_and_publish(service_artifacts, tmp_path / "index")
    settings = service_settings(tmp_path, worker_lease_ms=800, worker_block_ms=0)
    with EmbeddedRedis(tmp_path / "redis", persistence=False) as server:
        client = redis.Redis.from_url(server.url)
        holder = ModelHolder(settings, with_index=False)
        holder.refresh()
        yield settings, client, holder


def ingest_sessions(client: redis.Redis, settings) -> None:
    """Every event its own session (an hour apart): applying one twice would add a session."""
    start = int(time.time()) - 86_400
    events = [normalise(Event(user_id=user, item_id=1 + (i * 7 + n) % 150, timestamp=start + 3600 * i,
                              action="click", event_id=f"{user}-{i}"), time.time())
              for i in range(EVENTS_PER_USER) for n, user in enumerate(USERS)]
    assert append_events(client, Keys(settings.key_prefix, settings.stream_partitions), events,
                         settings.dedupe_ttl_s) == len(events)


def sessions_per_user(client, settings, holder) -> dict[str, int]:
    keys = Keys(settings.key_prefix, settings.stream_partitions)
    return {user: len(read_state(client, keys, user, holder.current.encoder.dim).history["sessions"])
            for user in USERS}


def test_a_worker_killed_mid_batch_loses_nothing_and_applies_nothing_twice(worker_setup, monkeypatch):
    settings, client, holder = worker_setup
    ingest_sessions(client, settings)
    dying = NearlineWorker(client, settings, holder, name="dying")
    dying.maintain_leases()
    assert dying.owned == set(range(settings.stream_partitions))
    messages = dying.reclaim() + dying.read_new()
    assert len(messages) == len(USERS) * EVENTS_PER_USER
    # It writes the state of the first half of its batch, then dies before acknowledging anything.
    with monkeypatch.context() as patch:
        patch.setattr(redis.client.Pipeline, "xack", lambda self, *args, **kwargs: self)
        dying.process(holder.current, messages[: len(messages) // 2])
    keys = Keys(settings.key_prefix, settings.stream_partitions)
    assert stream_backlog(client, keys) == len(messages)  # all still pending on the dead consumer

    survivor = NearlineWorker(client, settings, holder, name="survivor")

    def drained() -> bool:
        survivor.step()
        return stream_backlog(client, keys) == 0

    wait_until(drained, timeout_s=30, every_s=0.05)
    assert survivor.owned == set(range(settings.stream_partitions))  # the dead worker's leases expired
    assert sessions_per_user(client, settings, holder) == dict.fromkeys(USERS, EVENTS_PER_USER)


def test_live_workers_split_the_partitions(worker_setup):
    settings, client, holder = worker_setup
    first = NearlineWorker(client, settings, holder, name="first")
    second = NearlineWorker(client, settings, holder, name="second")
    first.maintain_leases()
    second.maintain_leases()
    first.maintain_leases()  # sees two live workers now and gives half back
    second.maintain_leases()
    assert len(first.owned) == len(second.owned) == settings.stream_partitions // 2
    assert not first.owned & second.owned
    ingest_sessions(client, settings)
    keys = Keys(settings.key_prefix, settings.stream_partitions)
    wait_until(lambda: (first.step(), second.step()) and stream_backlog(client, keys) == 0, timeout_s=30)
    assert sessions_per_user(client, settings, holder) == dict.fromkeys(USERS, EVENTS_PER_USER)


def test_the_worker_rides_out_a_redis_restart(tmp_path, service_artifacts):
    """Redis stops under a running worker and comes back (with its append-only file): the worker retries,
    then applies what arrives afterwards, with nothing applied twice."""
    import threading

    from index_builder.build import build_and_publish

    build_and_publish(service_artifacts, tmp_path / "index")
    settings = service_settings(tmp_path, worker_lease_ms=800, worker_block_ms=10)
    server = EmbeddedRedis(tmp_path / "redis", persistence=True).start()
    client = redis.Redis.from_url(server.url, socket_timeout=1)
    holder = ModelHolder(settings, with_index=False)
    holder.refresh()
    keys = Keys(settings.key_prefix, settings.stream_partitions)
    worker, stop = NearlineWorker(client, settings, holder, name="steady"), threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        ingest_sessions(client, settings)
        wait_until(lambda: stream_backlog(client, keys) == 0, timeout_s=30)
        server.stop()
        time.sleep(1.5)  # the worker meets connection errors meanwhile
        server.start()
        start = int(time.time())
        late = [normalise(Event(user_id=user, item_id=7, timestamp=start, action="click", event_id=f"{user}-late"),
                          time.time()) for user in USERS]
        assert append_events(client, keys, late, settings.dedupe_ttl_s) == len(USERS)
        wait_until(lambda: stream_backlog(client, keys) == 0, timeout_s=30)
        assert thread.is_alive()
        assert sessions_per_user(client, settings, holder) == dict.fromkeys(USERS, EVENTS_PER_USER + 1)
    finally:
        stop.set()
        thread.join(timeout=10)
        server.stop()
