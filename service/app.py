"""The FastAPI application: its lifespan (Redis, the live model pair, the embedded worker) and dependencies.

    uvicorn --factory service.app:create_app      (what `recall serve` runs)
"""

from __future__ import annotations

import logging
import re
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

import faiss
import redis
from fastapi import FastAPI, Request
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from service.body_limit import BodySizeLimit
from service.keys import REDIS_ERRORS, Keys, RedisClient
from service.redis_server import EmbeddedRedis
from service.serving_model import ModelHolder
from service.settings import Settings, get_settings
from service.streams import BacklogMonitor, ensure_groups
from service.worker import NearlineWorker

logger = logging.getLogger(__name__)


@dataclass
class Services:
    """What handlers need, built once per process by the lifespan."""

    settings: Settings
    client: RedisClient
    keys: Keys
    holder: ModelHolder
    backlog: BacklogMonitor


def connect_redis(url: str, cluster: bool = False, timeout_s: float = 30.0) -> RedisClient:
    """A client whose server answered PING, retrying with backoff; a clear error when it never does.

    Timeouts are short because /v1/recall reads Redis on the event loop: a dead server must cost a request one
    second at most (it then answers from a declared fallback), not stall the loop. Every key and script of the
    service touches one hash slot, so a Redis Cluster needs only the cluster-aware client."""
    options = {"socket_timeout": 1, "socket_connect_timeout": 1, "health_check_interval": 30}
    # A cluster client retries each command across the cluster several times by default: one retry keeps a dead
    # node's cost to a request near the socket timeout.
    cluster_options = {**options, "retry": Retry(NoBackoff(), retries=1)}
    delay, deadline = 0.1, time.monotonic() + timeout_s
    while True:
        try:
            # A cluster client reads the slot map at construction, so it is built inside the retry loop.
            client = RedisCluster.from_url(url, **cluster_options) if cluster else \
                redis.Redis.from_url(url, **options)
            client.ping()
            return client
        except REDIS_ERRORS as error:
            if time.monotonic() >= deadline:
                raise RuntimeError(f"Redis at {redact(url)} did not answer within {timeout_s:g} s: {error}") \
                    from None
            logger.warning("waiting for Redis at %s (%s)", redact(url), error)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def redact(url: str) -> str:
    """The URL without its password (in the authority or the query), for logs and errors."""
    scheme, _, rest = url.partition("://")
    if "@" in rest:  # the last @ ends the credentials, whatever characters the password holds
        rest = "***@" + rest.rsplit("@", 1)[1]
    return f"{scheme}://" + re.sub(r"(password=)[^&]*", r"\1***", rest)


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings: Settings = app.state.settings
    faiss.omp_set_num_threads(settings.search_threads)
    embedded = EmbeddedRedis(settings.data_dir / "redis").start() if settings.embedded else None
    worker_stop, worker_thread = threading.Event(), None
    holder = None
    try:
        client = connect_redis(embedded.url if embedded else settings.redis_url, settings.redis_cluster,
                               settings.redis_connect_timeout_s)
        keys = Keys(settings.key_prefix, settings.stream_partitions)
        ensure_groups(client, keys)
        holder = ModelHolder(settings).start()
        app.state.services = Services(settings=settings, client=client, keys=keys, holder=holder,
                                      backlog=BacklogMonitor(client, keys))
        if embedded and settings.embedded_worker:
            worker = NearlineWorker(client, settings, holder)
            worker_thread = threading.Thread(target=worker.run, args=(worker_stop,), name="nearline-worker",
                                             daemon=True)
            worker_thread.start()
        yield
    finally:
        worker_stop.set()
        if worker_thread is not None:
            worker_thread.join(timeout=10)
        if holder is not None:
            holder.stop()
        if embedded is not None:
            embedded.stop()


def create_app(settings: Settings | None = None) -> FastAPI:
    from fastapi.exceptions import RequestValidationError

    from service.routes import router, validation_error

    app = FastAPI(title="nearline-recall", version="0.1.0", lifespan=lifespan,
                  description="Near-line generative candidate generation: /v1/recall, the /v1/events webhook, "
                              "health, readiness and Prometheus metrics.")
    app.state.settings = settings or get_settings()
    app.add_middleware(BodySizeLimit, limit=app.state.settings.max_body_bytes)
    app.include_router(router)
    app.add_exception_handler(RequestValidationError, validation_error)
    return app


async def get_services(request: Request) -> Services:
    return request.app.state.services
