"""Every Redis key the service uses, in one place.

Keys carry hash tags so a Redis Cluster works unchanged: a user's state lives under `{u:<user>}`; a stream
partition and the event ids deduplicated into it share `{p<n>}`, so the ingest script touches one slot.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import redis
from redis.cluster import RedisCluster
from redis.exceptions import RedisClusterException

RedisClient = redis.Redis | RedisCluster  # what every module that talks to Redis accepts
# What an unreachable server or cluster raises (a cluster client that cannot read the slot map raises the latter).
REDIS_ERRORS = (redis.RedisError, RedisClusterException)


@dataclass(frozen=True)
class Keys:
    prefix: str
    partitions: int

    def partition_of(self, user_id: str) -> int:
        """Stable across processes and Python versions (unlike hash()): one user, one partition, one order."""
        return zlib.crc32(user_id.encode()) % self.partitions

    def stream(self, partition: int) -> str:
        return f"{self.prefix}:{{p{partition}}}:events"

    def seen(self, partition: int, event_id: str) -> str:
        return f"{self.prefix}:{{p{partition}}}:seen:{event_id}"

    def lease(self, partition: int) -> str:
        return f"{self.prefix}:{{p{partition}}}:lease"

    def user(self, user_id: str) -> str:
        return f"{self.prefix}:{{u:{user_id}}}:state"

    def prefix_state(self, user_id: str) -> str:
        """Beside the user's state, in its slot: a key of its own because it expires (RECALL_PREFIX_TTL_S)."""
        return f"{self.prefix}:{{u:{user_id}}}:prefix"

    # Items added live (POST /v1/items), under one hash tag: the rows as sent, model-free, so every model version
    # can embed them; and each model version's vectors of them, so a restart does not embed them again.
    @property
    def items(self) -> str:
        return f"{self.prefix}:{{catalogue}}:items"

    def item_vectors(self, model_version: str) -> str:
        return f"{self.prefix}:{{catalogue}}:vectors:{model_version}"

    @property
    def group(self) -> str:
        return "nearline-workers"

    @property
    def archive_group(self) -> str:
        return "archive"

    # The archiver's own state, under one hash tag so its transaction touches one slot of a cluster.
    @property
    def archive_plan(self) -> str:
        return f"{self.prefix}:{{archive}}:plan"

    @property
    def archive_watermarks(self) -> str:
        return f"{self.prefix}:{{archive}}:watermarks"

    @property
    def archive_flushes(self) -> str:
        return f"{self.prefix}:{{archive}}:flushes"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"

    def all_streams(self) -> list[str]:
        return [self.stream(partition) for partition in range(self.partitions)]
