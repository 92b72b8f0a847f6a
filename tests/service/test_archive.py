"""The event archive: every accepted event lands in hour-partitioned Parquet exactly once, across crashes, and the
archive trains as a log. Real redis-server, real Parquet files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
import redis

from contract.events import load_events
from service import archive as archive_module
from service.archive import EventArchiver
from service.ingest import normalise
from service.models import Event
from service.redis_server import EmbeddedRedis
from service.store.keys import Keys
from service.store.streams import append_events, ensure_groups, trim_floor
from tests.support.service import LiveService, post_events, service_settings, wait_until

pytestmark = pytest.mark.integration
KEYS = Keys("t", 4)


def events(count: int, start: int = 0) -> list[dict]:
    return [normalise(Event(event_id=f"e{n}", user_id=f"u{n % 7}", item_id=f"i{n % 11}", action="click",
                            timestamp=1_764_770_000 + n, context="home"), time.time())
            for n in range(start, start + count)]


def archived_event_ids(directory) -> list[str]:
    files = sorted(p for p in directory.rglob("*.parquet") if not p.name.startswith("."))
    return [] if not files else pd.concat([pd.read_parquet(f) for f in files]).event_id.tolist()


def run_until_archived(archiver: EventArchiver, client: redis.Redis, timeout_s: float = 20) -> None:
    """Step until the archive group has read every entry and nothing is buffered, planned or pending."""
    deadline = time.monotonic() + timeout_s
    while True:
        archiver.step()
        behind = 0
        for partition in range(KEYS.partitions):
            stream = KEYS.stream(partition)
            group = next(g for g in client.xinfo_groups(stream) if g["name"] == KEYS.archive_group.encode())
            newest = client.xinfo_stream(stream)["last-generated-id"]
            behind += group["pending"] + (group["last-delivered-id"] != newest)
        if not archiver.buffer and client.get(KEYS.archive_plan) is None and behind == 0:
            return
        assert time.monotonic() < deadline, "the archive did not catch up"


@pytest.fixture
def redis_client(tmp_path):
    with EmbeddedRedis(tmp_path / "redis", persistence=False) as server:
        client = redis.Redis.from_url(server.url)
        ensure_groups(client, KEYS)
        yield client


@pytest.mark.parametrize("crash", ["mid-file", "after-file", "after-watermark"])
def test_a_crash_at_any_point_of_a_flush_loses_nothing_and_writes_nothing_twice(tmp_path, redis_client,
                                                                                monkeypatch, crash):
    directory = tmp_path / "archive"
    first = EventArchiver(redis_client, KEYS, directory, flush_s=0.01)
    append_events(redis_client, KEYS, events(300), dedupe_ttl_s=3600)
    write_part = archive_module._write_part

    def crashing_write(path, rows):
        if crash == "mid-file":
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_name(f".{path.name}.tmp").write_bytes(b"PAR1 half a file")
            raise KeyboardInterrupt  # the process dies inside the write
        write_part(path, rows)
        if crash == "after-file":
            raise KeyboardInterrupt

    if crash == "after-watermark":
        monkeypatch.setattr(EventArchiver, "acknowledge", lambda self, messages: (_ for _ in ()).throw(
            KeyboardInterrupt()))
    else:
        monkeypatch.setattr(archive_module, "_write_part", crashing_write)
    with pytest.raises(KeyboardInterrupt):
        for _ in range(100):
            first.step()
    assert not list(directory.rglob(".*.tmp")) or crash == "mid-file"
    monkeypatch.undo()
    append_events(redis_client, KEYS, events(100, start=300), dedupe_ttl_s=3600)  # more arrive meanwhile
    restarted = EventArchiver(redis_client, KEYS, directory, flush_s=0.01)  # a new process: same consumer name
    run_until_archived(restarted, redis_client)
    ids = archived_event_ids(directory)
    assert sorted(ids) == sorted(f"e{n}" for n in range(400)) and len(ids) == len(set(ids))
    assert not list(directory.rglob(".*.tmp"))  # no partial file survives


def test_recall_archive_processes_sigkilled_while_events_arrive_archive_each_event_once(tmp_path):
    """Real SIGKILLs of `recall archive` wherever it is (reading, writing, between the two) while events keep
    arriving; the deterministic tests above kill it at the worst points of a flush."""
    directory = tmp_path / "archive"
    with EmbeddedRedis(tmp_path / "redis", persistence=False) as server:
        client = redis.Redis.from_url(server.url)
        ensure_groups(client, KEYS)
        ensure_groups(client, KEYS, KEYS.archive_group)  # what the API does at start-up when archiving is on
        env = {**os.environ, "REDIS_URL": server.url, "RECALL_ARCHIVE_DIR": str(directory),
               "RECALL_ARCHIVE_FLUSH_S": "0.2", "RECALL_KEY_PREFIX": KEYS.prefix,
               "RECALL_STREAM_PARTITIONS": str(KEYS.partitions)}
        stop = threading.Event()

        def send() -> None:
            for start in range(0, 600, 10):
                append_events(client, KEYS, events(10, start=start), dedupe_ttl_s=3600)
                if stop.wait(0.25):  # ~15 s of traffic: every archiver below starts and dies while it flows
                    return

        sender = threading.Thread(target=send)
        sender.start()
        try:
            for _ in range(3):
                archiver = subprocess.Popen([sys.executable, "-m", "cli.main", "archive"], env=env,
                                            stdout=subprocess.DEVNULL, stderr=(tmp_path / "archive.log").open("a"))
                before = len(archived_event_ids(directory))
                wait_until(lambda before=before: len(archived_event_ids(directory)) > before, timeout_s=60)
                archiver.send_signal(signal.SIGKILL)
                archiver.wait(timeout=10)
        finally:
            stop.set()  # the rest arrives at once: the survivor's first flush
            sender.join()
        for start in range(0, 600, 10):  # what the sender had not sent yet (the appends dedupe the rest)
            append_events(client, KEYS, events(10, start=start), dedupe_ttl_s=3600)
        survivor = subprocess.Popen([sys.executable, "-m", "cli.main", "archive"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: len(archived_event_ids(directory)) >= 600, timeout_s=60)
            time.sleep(1.0)  # five more flush intervals: a duplicate would show up by now
        finally:
            survivor.send_signal(signal.SIGTERM)
            survivor.wait(timeout=30)
    ids = archived_event_ids(directory)
    assert sorted(ids) == sorted(f"e{n}" for n in range(600)) and len(ids) == len(set(ids))
    assert not list(directory.rglob(".*.tmp"))


def test_the_worker_does_not_trim_what_the_archive_still_needs(redis_client):
    ensure_groups(redis_client, KEYS, KEYS.archive_group)
    append_events(redis_client, KEYS, events(50), dedupe_ttl_s=3600)
    for partition in range(KEYS.partitions):
        stream = KEYS.stream(partition)
        entries = redis_client.xreadgroup(KEYS.group, "w", {stream: ">"})  # the worker has applied everything
        if entries:
            redis_client.xack(stream, KEYS.group, *[entry_id for entry_id, _ in entries[0][1]])
            assert trim_floor(redis_client, stream) == b"0-0"  # the archive has read nothing yet


def test_served_events_reach_the_archive_once_and_train_as_a_log(tmp_path, service_artifacts, small_world):
    from index_builder.build import build_and_publish

    directory, _ = small_world
    build_and_publish(service_artifacts, tmp_path / "index")
    archive = tmp_path / "archive"
    service = LiveService(service_settings(tmp_path, archive_dir=archive, archive_flush_s=1.0)).start()
    world = pd.read_parquet(directory / "events.parquet").head(400)
    batch = [{"event_id": int(r.event_id), "user_id": int(r.user_id), "session_id": int(r.session_id),
              "timestamp": int(r.timestamp), "item_id": int(r.item_id), "action": str(r.action),
              "context": str(r.context), "scenario": str(r.scenario)} for r in world.itertuples()]
    for event in batch[-50:]:  # senders that know no sessions: archived with a null session_id
        del event["session_id"]
    try:
        with service.client() as client:
            assert post_events(client, batch).status_code == 202
            assert post_events(client, batch[:100]).json()["accepted"] == 0  # a redelivered webhook call
            wait_until(lambda: len(archived_event_ids(archive)) >= len(batch), timeout_s=20)
            time.sleep(2.5)  # two more flush intervals: nothing else may arrive
            assert client.get("/readyz").json()["archive_backlog"] == 0  # operators see the archive caught up
    finally:
        service.stop()
    ids = archived_event_ids(archive)
    assert sorted(ids) == sorted(str(e["event_id"]) for e in batch)
    assert all(p.parent.name.startswith("hour=") and p.parent.parent.name.startswith("date=")
               for p in archive.rglob("*.parquet"))
    log = load_events(archive)  # what `recall train --events DIR` reads, events without a session_id included
    assert len(log) == len(batch) and log.has_timestamp and log.has_session_id
