"""What `recall serve` runs beside the API on its embedded default: a private redis-server, the near-line worker
and the event archiver.

With one API process they run inside it (service.app's lifespan). With several (`RECALL_WORKERS`, one per CPU by
default), they run once in the parent of the API processes (`embedded_backend`), which hands its Redis URL to
them: a worker per API process would split the stream partitions for nothing, and a redis-server per process
would split the users' state.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from service.archive import EventArchiver
from service.redis_server import EmbeddedRedis
from service.serving_model import ModelHolder
from service.settings import Settings
from service.store.connection import connect_redis
from service.store.keys import Keys, RedisClient
from service.store.streams import ensure_groups
from service.worker import NearlineWorker


def prepare_streams(client: RedisClient, keys: Keys, settings: Settings) -> None:
    """The consumer groups, before the first event is accepted, wherever the worker and the archiver run."""
    ensure_groups(client, keys)
    if settings.archive_dir is not None:
        ensure_groups(client, keys, keys.archive_group)


class BackgroundJobs:
    """The near-line worker (unless RECALL_EMBEDDED_WORKER=false) and the archiver (when RECALL_ARCHIVE_DIR is
    set) as threads of this process, stopped together."""

    def __init__(self, client: RedisClient, keys: Keys, settings: Settings, holder: ModelHolder):
        self.stop_event = threading.Event()
        self.threads = []
        if settings.embedded_worker:
            worker = NearlineWorker(client, settings, holder)
            self.threads.append(threading.Thread(target=worker.run, args=(self.stop_event,),
                                                 name="nearline-worker", daemon=True))
        if settings.archive_dir is not None:
            archiver = EventArchiver(client, keys, settings.archive_dir, settings.archive_flush_s)
            self.threads.append(threading.Thread(target=archiver.run, args=(self.stop_event,),
                                                 name="event-archive", daemon=True))

    def start(self) -> BackgroundJobs:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            if thread.is_alive():  # (one that never started cannot be joined)
                thread.join(timeout=10)


@contextmanager
def embedded_backend(settings: Settings) -> Iterator[str]:
    """The private redis-server, the worker and the archiver in this process, for API processes started inside
    the context; yields the URL they connect to. The worker loads the encoder only (it never searches)."""
    with EmbeddedRedis(settings.data_dir / "redis") as server:
        client = connect_redis(server.url, timeout_s=settings.redis_connect_timeout_s)
        keys = Keys(settings.key_prefix, settings.stream_partitions)
        prepare_streams(client, keys, settings)
        holder = ModelHolder(settings, with_index=False).start()
        try:
            jobs = BackgroundJobs(client, keys, settings, holder)
            try:
                jobs.start()
                yield server.url
            finally:
                jobs.stop()
        finally:
            holder.stop()
