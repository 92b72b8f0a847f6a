"""The event streams: appending a deduplicated batch, the worker group, and the backlog behind it."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections import defaultdict

import orjson
import redis

from service.store.keys import REDIS_ERRORS, Keys, RedisClient

# One partition per call, so every key lives in one hash slot: the event ids seen and the stream itself.
# An event is appended only when its id was not seen within the dedupe window: redelivered webhooks are no-ops.
APPEND_NEW_EVENTS = """
local appended = 0
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('XADD', KEYS[1], '*', 'e', ARGV[i])
    appended = appended + 1
  end
end
return appended
"""


def ensure_groups(client: RedisClient, keys: Keys, group: str | None = None) -> None:
    """Create the worker group (or `group`) on every partition (and the streams), from the start of each."""
    for stream in keys.all_streams():
        try:
            client.xgroup_create(stream, group or keys.group, id="0", mkstream=True)
        except redis.ResponseError as error:
            if "BUSYGROUP" not in str(error):
                raise


def append_events(client: RedisClient, keys: Keys, events: list[dict], dedupe_ttl_s: int) -> int:
    """Append normalised events (each with `user_id` and `event_id`) to their users' partitions; returns how
    many were new. Order within a user is the order given."""
    by_partition: dict[int, list[dict]] = defaultdict(list)
    for event in events:
        by_partition[keys.partition_of(event["user_id"])].append(event)
    script = client.register_script(APPEND_NEW_EVENTS)
    appended = 0
    for partition, batch in by_partition.items():
        seen_keys = [keys.seen(partition, hashlib.sha256(orjson.dumps([event["user_id"], event["event_id"]]))
                               .hexdigest()[:32]) for event in batch]
        appended += int(script(keys=[keys.stream(partition), *seen_keys],
                               args=[dedupe_ttl_s, *(orjson.dumps(event) for event in batch)]))
    return appended


def stream_backlog(client: RedisClient, keys: Keys, group_name: str | None = None) -> int:
    """Events appended but not yet acknowledged by a consumer group (the workers' by default), over all
    partitions."""
    group_name = group_name or keys.group
    backlog = 0
    for stream in keys.all_streams():
        try:
            groups = client.xinfo_groups(stream)
        except redis.ResponseError:  # the stream does not exist yet
            continue
        for group in groups:
            if _text(group["name"]) == group_name:
                backlog += _undelivered(client, stream, group) + int(group.get("pending") or 0)
    return backlog


def _undelivered(client: RedisClient, stream: str, group: dict) -> int:
    """Entries not yet delivered to the group.

    Redis derives its `lag` from counters that a restart or a trim can leave unknown or plain wrong (a soak saw
    thousands of phantom entries per partition after a restart). So: none when the group has delivered the newest
    entry; else Redis's lag, never more than the stream holds; else the entries after the last delivered one."""
    info = client.xinfo_stream(stream)
    if stream_id(group["last-delivered-id"]) >= stream_id(info["last-generated-id"]):
        return 0
    if group.get("lag") is not None:
        return min(int(group["lag"]), int(info["length"]))
    last = _text(group["last-delivered-id"])
    return len(client.xrange(stream, min=f"({last}", max="+", count=max(int(info["length"]), 1)))


def trim_floor(client: RedisClient, stream: str) -> bytes | str | None:
    """The oldest entry some group of the stream still needs: its oldest pending entry, else its last delivered
    one. The archive's group holds the worker's trimming back, so no event leaves before it is archived."""
    floor = None
    for group in client.xinfo_groups(stream):
        needed = client.xpending(stream, group["name"])["min"] if group["pending"] else group["last-delivered-id"]
        if needed is not None and (floor is None or stream_id(needed) < stream_id(floor)):
            floor = needed
    return floor


def stream_id(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id as a comparable (milliseconds, sequence)."""
    millis, _, sequence = _text(entry_id).partition("-")
    return int(millis), int(sequence or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class BacklogMonitor:
    """The backlog for the webhook's back-pressure check, measured at most once per `every_s` (it costs a few
    Redis calls per partition); the last known value while Redis is unreachable."""

    def __init__(self, client: RedisClient, keys: Keys, every_s: float = 1.0):
        self.client, self.keys, self.every_s = client, keys, every_s
        self._value, self._measured_at = 0, 0.0
        self._lock = threading.Lock()

    def value(self) -> int:
        with self._lock:
            now = time.monotonic()
            if now - self._measured_at >= self.every_s:
                self._measured_at = now
                with contextlib.suppress(*REDIS_ERRORS):
                    self._value = stream_backlog(self.client, self.keys)
            return self._value
