"""The near-line worker's delivery guarantees against a real redis-server: a worker that dies mid-batch loses no
event, and none is applied twice."""

from __future__ import annotations

import time

import numpy as np
import pytest
import redis

from service.history import apply_event, new_history
from service.ingest import normalise
from service.models import Event
from service.redis_server import EmbeddedRedis
from service.serving_model import ModelHolder
from service.store.keys import Keys
from service.store.streams import append_events, ensure_groups, stream_backlog
from service.worker import NearlineWorker, precomputed_contexts
from tests.service.test_service import user_events
from tests.support.service import (
    WorkerThreads,
    applied_sessions,
    expected_sessions,
    hourly_events,
    service_settings,
    wait_until,
)

pytestmark = pytest.mark.integration

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


EVENTS = hourly_events(USERS, EVENTS_PER_USER)


def ingest_sessions(client: redis.Redis, settings) -> None:
    events = [normalise(Event(**event), time.time()) for event in EVENTS]
    assert append_events(client, Keys(settings.key_prefix, settings.stream_partitions), events,
                         settings.dedupe_ttl_s) == len(events)


def all_applied_once(client, settings, extra: list[dict] = ()) -> bool:
    keys = Keys(settings.key_prefix, settings.stream_partitions)
    return applied_sessions(client, keys, USERS) == expected_sessions([*EVENTS, *extra])


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
    assert all_applied_once(client, settings)


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
    assert all_applied_once(client, settings)


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
        late = [{"user_id": user, "item_id": 7, "timestamp": int(time.time()), "action": "click",
                 "event_id": f"{user}-late"} for user in USERS]
        assert append_events(client, keys, [normalise(Event(**event), time.time()) for event in late],
                             settings.dedupe_ttl_s) == len(USERS)
        wait_until(lambda: stream_backlog(client, keys) == 0, timeout_s=30)
        assert thread.is_alive()
        assert all_applied_once(client, settings, late)
    finally:
        stop.set()
        thread.join(timeout=10)
        server.stop()


def test_three_workers_on_a_redis_cluster_keep_each_users_order_and_lose_nothing(tmp_path, service_artifacts,
                                                                                 redis_cluster):
    """Scale-out: 3 workers share 8 stream partitions on a 3-node Redis Cluster while events arrive."""
    import uuid

    from index_builder.build import build_and_publish
    from service.store.connection import connect_redis
    build_and_publish(service_artifacts, tmp_path / "index")
    settings = service_settings(tmp_path, redis_url=redis_cluster.url, redis_cluster=True, stream_partitions=8,
                                key_prefix=f"w{uuid.uuid4().hex[:8]}")
    keys = Keys(settings.key_prefix, settings.stream_partitions)
    client = connect_redis(settings.redis_url, cluster=True)
    users = [f"c{n}" for n in range(40)]
    events = hourly_events(users, per_user=10)
    workers = WorkerThreads(settings, count=3)
    try:
        # The first worker up takes every partition, then gives some back as the others register.
        wait_until(lambda: sorted(len(worker.owned) for worker in workers.workers) == [2, 3, 3], timeout_s=30)
        assert set().union(*(worker.owned for worker in workers.workers)) == set(range(8))
        for start in range(0, len(events), 50):  # arriving while the workers run
            append_events(client, keys, [normalise(Event(**e), time.time()) for e in events[start:start + 50]],
                          settings.dedupe_ttl_s)
        wait_until(lambda: applied_sessions(client, keys, users) == expected_sessions(events), timeout_s=60)
        masters = {node.name for node in client.get_primaries()}
        assert len(masters) == 3
        assert {client.get_node_from_key(keys.stream(p)).name for p in range(8)} == masters  # spread over nodes
    finally:
        workers.stop()


def test_the_backlog_counts_what_is_undelivered_whatever_redis_reports_as_lag(tmp_path):
    """After a restart Redis may report a lag from stale counters (seen in the soak: thousands of phantom entries
    per partition, and a backlog that never drained) or none at all. The backlog must still be exact at zero (what
    the demo and the benchmarks wait for) and never above what the stream holds."""
    settings = service_settings(tmp_path, stream_partitions=1)
    keys = Keys(settings.key_prefix, 1)
    with EmbeddedRedis(tmp_path / "redis", persistence=False) as server:
        client = redis.Redis.from_url(server.url)
        ensure_groups(client, keys)
        events = [normalise(Event(user_id="u", item_id=n, event_id=str(n)), time.time()) for n in range(10)]
        append_events(client, keys, events, 60)
        stream = keys.stream(0)
        delivered = client.xreadgroup(keys.group, "w", {stream: ">"}, count=4)[0][1]
        client.xack(stream, keys.group, *(entry_id for entry_id, _ in delivered))
        assert stream_backlog(client, keys) == 6
        client.xgroup_setid(stream, keys.group, delivered[-1][0], entries_read=0)  # Redis now reports lag 10
        assert client.xinfo_groups(stream)[0]["lag"] == 10
        assert 6 <= stream_backlog(client, keys) <= 10  # bounded by what the stream holds
        rest = client.xreadgroup(keys.group, "w", {stream: ">"})[0][1]
        client.xack(stream, keys.group, *(entry_id for entry_id, _ in rest))
        client.xgroup_setid(stream, keys.group, rest[-1][0], entries_read=2)  # everything delivered, "lag 8"
        assert client.xinfo_groups(stream)[0]["lag"] == 8 and stream_backlog(client, keys) == 0


def test_the_worker_recreates_its_group_when_redis_comes_back_empty(worker_setup):
    """A Redis without persistence restarts empty: the webhook's next append recreates a stream but not the
    worker group. The worker sees NOGROUP, recreates the groups, and applies what arrives next."""
    import threading

    settings, client, holder = worker_setup
    keys = Keys(settings.key_prefix, settings.stream_partitions)
    worker, stop = NearlineWorker(client, settings, holder, name="steady"), threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_until(lambda: worker.owned, timeout_s=30)
        client.flushall()  # what a restart without persistence leaves
        ingest_sessions(client, settings)
        wait_until(lambda: all_applied_once(client, settings), timeout_s=60)
        assert stream_backlog(client, keys) == 0
    finally:
        stop.set()
        thread.join(timeout=10)


def worker_histories(small_world, model, users: list[int]) -> list[dict]:
    """The histories the worker builds from these small-world users' events (each ends in a context)."""
    histories = []
    for user in users:
        histories.append(new_history())
        for event in user_events(small_world, user):
            apply_event(histories[-1], normalise(Event(**event), time.time()), model.schema)
    return histories


def counting_encoder_rows(monkeypatch, encoder) -> list[int]:
    """The rows of every full-encoder call on `encoder` from now on."""
    rows: list[int] = []

    def counting(original):
        def counted(batch):
            rows.append(len(batch["item"]))
            return original(batch)
        return counted

    monkeypatch.setattr(encoder, "encode", counting(encoder.encode))
    monkeypatch.setattr(encoder, "encode_with_prefix", counting(encoder.encode_with_prefix))
    return rows


def test_each_history_is_encoded_once_and_every_precomputed_vector_is_the_full_encoders(worker_setup, small_world,
                                                                                       monkeypatch):
    settings, client, holder = worker_setup
    model = holder.current
    assert model.query_step is not None
    histories = worker_histories(small_world, model, [7, 11, 21, 30])
    contexts = [precomputed_contexts(model, history) for history in histories]
    assert all(len(pairs) == 2 for pairs in contexts)  # the last context and the default one
    encoded_rows = counting_encoder_rows(monkeypatch, model.encoder)
    now = time.time()
    vectors, prefixes = NearlineWorker(client, settings, holder).encode(model, histories, contexts, now,
                                                                        [f"{n}-0" for n in range(len(histories))])
    assert sum(encoded_rows) == len(histories)  # each history once; the default context from its query step
    assert all(prefix is not None for prefix in prefixes)
    rows = [(history, pair) for history, pairs in zip(histories, contexts, strict=True) for pair in pairs]
    full = model.encode([history for history, _ in rows], [pair[0] for _, pair in rows],
                        [pair[1] for _, pair in rows], np.full(len(rows), int(now)))
    assert np.abs(vectors[0::2] - full[0::2]).max() <= 1e-5  # the last context: the encoder's own row
    cosine = (vectors * full).sum(-1) / np.linalg.norm(vectors, axis=-1) / np.linalg.norm(full, axis=-1)
    assert cosine.min() >= 0.9999 and np.abs(vectors - full).max() <= 2e-3  # the default: the query step's
    assert np.abs(vectors[0] - vectors[1]).max() > 1e-3  # the two contexts do differ
