"""A Redis client for the service: one that answered PING, with short timeouts, and URLs without passwords."""

from __future__ import annotations

import logging
import re
import time

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from service.store.keys import REDIS_ERRORS, RedisClient

logger = logging.getLogger(__name__)


def connect_redis(url: str, cluster: bool = False, timeout_s: float = 30.0, password: str | None = None) -> RedisClient:
    """A client whose server answered PING, retrying with backoff; a clear error when it never does.

    Timeouts are short because /v1/recall reads Redis on the event loop: a dead server must cost a request one
    second at most (it then answers from a declared fallback), not stall the loop. Every key and script of the
    service touches one hash slot, so a Redis Cluster needs only the cluster-aware client."""
    options = {"socket_timeout": 1, "socket_connect_timeout": 1, "health_check_interval": 30}
    if password is not None:
        options["password"] = password
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
