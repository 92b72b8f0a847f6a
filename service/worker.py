"""The near-line worker: stream partitions -> user histories -> ONNX user vectors in Redis.

Ordering and delivery:
- A user's events land in one partition. A partition is consumed by one worker at a time, under a lease that the
  worker renews; live workers split the partitions evenly, and a dead worker's partitions move once its lease
  expires. The new owner first claims the messages the old one read but never acknowledged (XAUTOCLAIM).
- At least once, applied once: messages are acknowledged only after the user's state is written, and the state
  remembers the newest entry applied, so a redelivered message is skipped.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import socket
import threading
import time
import uuid
from collections import defaultdict

import numpy as np
import orjson
from redis.cluster import RedisCluster

from contract.prefix_state import PrefixState
from service import metrics
from service.history import apply_event, codes_of, last_context, viewed_items
from service.serving_model import ModelHolder, ServingModel
from service.settings import Settings
from service.store.keys import REDIS_ERRORS, Keys, RedisClient
from service.store.streams import ensure_groups, stream_backlog, stream_id, trim_floor
from service.store.user_state import read_histories, state_fields, write_states

logger = logging.getLogger(__name__)

RENEW_IF_MINE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
RELEASE_IF_MINE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
HOUSEKEEPING_S = 5.0
MAX_ENCODER_ROWS = 256  # rows per encoder call: the size of the encoder's input buffers


def chunks(rows: list, size: int = MAX_ENCODER_ROWS) -> list[list]:
    return [rows[start:start + size] for start in range(0, len(rows), size)]


def precomputed_contexts(model: ServingModel, history: dict) -> list[tuple[str | None, str | None]]:
    """The (context, scenario) pairs a user's vectors are precomputed for: the last context and the default,
    both in the last scenario (what a request without those fields, or with an unknown context, asks for). A
    context-free model's one vector serves every context."""
    context, scenario = last_context(history)
    context, scenario = model.known("contexts", context), model.known("scenarios", scenario)
    if context is None or model.schema.context_free:
        return [(context, scenario)]
    return [(context, scenario), (None, scenario)]


class NearlineWorker:
    def __init__(self, client: RedisClient, settings: Settings, holder: ModelHolder, name: str | None = None):
        self.client = client
        self.settings = settings
        self.holder = holder
        self.keys = Keys(settings.key_prefix, settings.stream_partitions)
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.owned: set[int] = set()
        self.to_reclaim: set[int] = set()  # partitions whose unacknowledged messages we must claim first
        self._renew = client.register_script(RENEW_IF_MINE)
        self._release = client.register_script(RELEASE_IF_MINE)
        self._next_lease_check = 0.0
        self._next_housekeeping = 0.0
        self._rng = random.Random()  # its own: the global one belongs to the host process
        ensure_groups(client, self.keys)

    # -- the loop -----------------------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        logger.info("worker %s started", self.name)
        try:
            while not stop.is_set():
                try:
                    self.step()
                except REDIS_ERRORS as error:  # unreachable, timed out, or refusing writes: wait it out
                    logger.warning("redis error (%s); retrying", error)
                    self.to_reclaim |= self.owned
                    if "NOGROUP" in str(error):  # a Redis that came back without its data: streams start anew
                        with contextlib.suppress(*REDIS_ERRORS):
                            ensure_groups(self.client, self.keys)
                    stop.wait(1.0)
                except Exception:  # one bad batch must not end the worker; its messages stay pending
                    logger.exception("worker batch failed; retrying")
                    self.to_reclaim |= self.owned
                    stop.wait(1.0)
        finally:
            self.release_all()

    def step(self) -> int:
        """Read one batch from the owned partitions and apply it; returns the number of messages handled."""
        model = self.holder.current
        if model is None:
            self.holder.refresh()
            time.sleep(0.2)
            return 0
        now = time.monotonic()
        if now >= self._next_lease_check:
            self.maintain_leases()
            self._next_lease_check = now + self.settings.worker_lease_ms / 3000
        if now >= self._next_housekeeping:
            self.housekeeping()
            self._next_housekeeping = now + HOUSEKEEPING_S
        if not self.owned:
            time.sleep(self.settings.worker_lease_ms / 3000)
            return 0
        messages = self.reclaim() if self.to_reclaim else self.read_new()
        if messages:
            try:
                self.process(model, messages)
            except Exception:
                self.to_reclaim |= self.owned  # unacknowledged: read them again from the pending list
                raise
        return len(messages)

    # -- leases -------------------------------------------------------------------------------------------------
    def maintain_leases(self) -> None:
        now_ms = int(time.time() * 1000)
        lease_ms = self.settings.worker_lease_ms
        self.client.zadd(self.keys.workers, {self.name: now_ms})
        self.client.zremrangebyscore(self.keys.workers, 0, now_ms - lease_ms)
        live_workers = max(int(self.client.zcard(self.keys.workers)), 1)
        for partition in sorted(self.owned):
            if not self._renew(keys=[self.keys.lease(partition)], args=[self.name, lease_ms]):
                logger.warning("lost the lease of partition %d", partition)
                self.owned.discard(partition)
                self.to_reclaim.discard(partition)
        target = math.ceil(self.settings.stream_partitions / live_workers)
        while len(self.owned) > target:
            partition = max(self.owned)
            self._release(keys=[self.keys.lease(partition)], args=[self.name])
            self.owned.discard(partition)
            self.to_reclaim.discard(partition)
        candidates = list(range(self.settings.stream_partitions))
        self._rng.shuffle(candidates)
        for partition in candidates:
            if len(self.owned) >= target:
                break
            if partition not in self.owned and self.client.set(self.keys.lease(partition), self.name, nx=True,
                                                                px=lease_ms):
                self.owned.add(partition)
                self.to_reclaim.add(partition)

    def release_all(self) -> None:
        try:
            for partition in self.owned:
                self._release(keys=[self.keys.lease(partition)], args=[self.name])
            self.client.zrem(self.keys.workers, self.name)
        except REDIS_ERRORS:
            pass
        self.owned.clear()

    # -- reading ------------------------------------------------------------------------------------------------
    def reclaim(self) -> list[tuple[int, bytes, dict]]:
        """Everything pending on the partitions just taken over (the previous owner's unacknowledged batch)."""
        messages = []
        for partition in sorted(self.to_reclaim):
            cursor = "0-0"
            while True:
                cursor, claimed, *_ = self.client.xautoclaim(self.keys.stream(partition), self.keys.group, self.name,
                                                            min_idle_time=0, start_id=cursor,
                                                            count=self.settings.worker_read_count)
                messages += [(partition, entry_id, orjson.loads(fields[b"e"])) for entry_id, fields in claimed
                             if fields]
                if stream_id(cursor) == (0, 0):
                    break
        self.to_reclaim.clear()
        return messages

    def read_new(self) -> list[tuple[int, bytes, dict]]:
        partition_of = {self.keys.stream(partition): partition for partition in self.owned}
        count, block_ms = self.settings.worker_read_count, self.settings.worker_block_ms
        if isinstance(self.client, RedisCluster):
            # A cluster refuses one XREADGROUP over streams of several slots: read each without blocking, in one
            # pipeline, and wait one block interval when all were empty.
            pipe = self.client.pipeline(transaction=False)
            for stream in partition_of:
                pipe.xreadgroup(self.keys.group, self.name, {stream: ">"}, count=count)
            replies = [reply for replies in pipe.execute() for reply in replies or []]
            if not replies:
                time.sleep(block_ms / 1000)
        else:
            replies = self.client.xreadgroup(self.keys.group, self.name, {stream: ">" for stream in partition_of},
                                             count=count, block=block_ms or None)
        return [(partition_of[stream.decode()], entry_id, orjson.loads(fields[b"e"]))
                for stream, entries in replies or [] for entry_id, fields in entries]

    # -- applying -----------------------------------------------------------------------------------------------
    def process(self, model: ServingModel, messages: list[tuple[int, bytes, dict]]) -> None:
        """Apply a batch: each touched user's history updated, re-encoded and written, then acknowledged."""
        events_of: dict[str, list[tuple[bytes, dict]]] = defaultdict(list)
        for _, entry_id, event in sorted(messages, key=lambda message: stream_id(message[1])):
            events_of[event["user_id"]].append((entry_id, event))
        users = list(events_of)
        states = read_histories(self.client, self.keys, users)
        newest_ids, contexts, appended_ms = [], [], []
        for user_id, state in zip(users, states, strict=True):
            applied_up_to = stream_id(state.last_id) if state.last_id else (-1, -1)
            newest = state.last_id
            for entry_id, event in events_of[user_id]:
                if stream_id(entry_id) <= applied_up_to:
                    continue  # applied before a crash, redelivered since
                apply_event(state.history, event, model.schema)
                newest = entry_id.decode()
                appended_ms.append(stream_id(entry_id)[0])
            newest_ids.append(newest)
            contexts.append(precomputed_contexts(model, state.history))
        vectors, prefixes = self.encode(model, [s.history for s in states], contexts, time.time(), newest_ids)
        if self.settings.prefix_ttl_s <= 0:  # not kept: requests in other contexts encode the history in full
            prefixes = [None] * len(prefixes)
        viewed = [viewed_items(state.history) for state in states]
        viewed_codes = np.split(codes_of(model.vocabs.items, [i for items in viewed for i in items]),
                                np.cumsum([len(items) for items in viewed])[:-1])
        fields, row, encoded_ms = [], 0, int(time.time() * 1000)
        for state, newest, user_contexts, codes in zip(states, newest_ids, contexts, viewed_codes, strict=True):
            fields.append(state_fields(state.history, newest, model.model_version, user_contexts,
                                       vectors[row:row + len(user_contexts)], codes, encoded_ms))
            row += len(user_contexts)
        written = write_states(self.client, self.keys, users, [state.last_id for state in states], fields,
                               [prefix.to_bytes() if prefix else None for prefix in prefixes],
                               self.settings.prefix_ttl_s * 1000)
        moved = {user for user, ok in zip(users, written, strict=True) if not ok}
        if moved:  # another worker wrote these users meanwhile: read their messages again from the pending list
            logger.warning("%d users were written by another worker mid-batch; re-reading them", len(moved))
            self.to_reclaim |= {p for p, _, event in messages if event["user_id"] in moved} & self.owned
        self.acknowledge([message for message in messages if message[2]["user_id"] not in moved])
        done_ms = time.time() * 1000
        for millis in appended_ms:
            metrics.FRESHNESS_SECONDS.observe(max(done_ms - millis, 0.0) / 1000)
        metrics.USERS_ENCODED.inc(len(users) - len(moved))
        metrics.EVENTS_APPLIED.inc(len(appended_ms))

    def acknowledge(self, messages: list[tuple[int, bytes, dict]]) -> None:
        entry_ids: dict[int, list[bytes]] = defaultdict(list)
        for partition, entry_id, _ in messages:
            entry_ids[partition].append(entry_id)
        pipe = self.client.pipeline(transaction=False)
        for partition, ids in entry_ids.items():
            pipe.xack(self.keys.stream(partition), self.keys.group, *ids)
        pipe.execute()

    def encode(self, model: ServingModel, histories: list[dict], contexts: list[list[tuple[str | None, str | None]]],
               now: float, last_ids: list[str]) -> tuple[np.ndarray, list[PrefixState | None]]:
        """The vector of every (user, context) pair, user by user, and each user's prefix state (None without a
        query step), describing the history as of the stream entry `last_ids` names.

        The encoder reads each history once, in the user's first context. The other contexts' vectors come from
        the query step over the prefix state as it is stored: what a request in that context would get, within
        the query step's tolerance of the full encoder's (cosine >= 0.9999, checked at export)."""
        with_prefix = model.query_step is not None
        first = [pairs[0] for pairs in contexts]
        first_vectors, prefixes = self._encode_full(model, histories, first, now, last_ids if with_prefix else None)
        others = [(user, pair) for user, pairs in enumerate(contexts) for pair in pairs[1:]]
        if with_prefix:
            other_vectors = [model.query_vectors([prefixes[user] for user, _ in part], [pair[0] for _, pair in part],
                                                 [pair[1] for _, pair in part], np.full(len(part), int(now)))
                             for part in chunks(others)]
            other_vectors = np.concatenate(other_vectors) if other_vectors else first_vectors[:0]
        else:  # an export without a query step (before it existed): every context in full
            other_vectors, _ = self._encode_full(model, [histories[user] for user, _ in others],
                                                 [pair for _, pair in others], now)
        # Back in (user, context) order: each user's first context, then its others.
        is_first = np.zeros(len(first) + len(others), dtype=bool)
        pairs_per_user = np.array([len(pairs) for pairs in contexts], dtype=np.int64)
        is_first[np.cumsum(pairs_per_user) - pairs_per_user] = True
        vectors = np.empty((len(is_first), first_vectors.shape[1]), dtype=first_vectors.dtype)
        vectors[is_first], vectors[~is_first] = first_vectors, other_vectors
        return vectors, prefixes

    def _encode_full(self, model: ServingModel, histories: list[dict], pairs: list[tuple[str | None, str | None]],
                     now: float, last_ids: list[str] | None = None) -> tuple[np.ndarray, list[PrefixState | None]]:
        """One row per history through the full encoder, in batches of at most the buffers' size; with
        `last_ids`, each row's prefix state from the same call."""
        vectors, prefixes = [], []
        for part in chunks(list(range(len(histories)))):
            metrics.ENCODER_BATCH.observe(len(part))
            args = ([histories[row] for row in part], [pairs[row][0] for row in part],
                    [pairs[row][1] for row in part], np.full(len(part), int(now), dtype=np.int64))
            if last_ids is None:
                vectors.append(model.encode(*args, reuse_buffers=True))
                prefixes += [None] * len(part)
                continue
            encoded, states = model.encode_with_prefix(*args, first_rows=list(range(len(part))),
                                                       last_ids=[last_ids[row] for row in part],
                                                       reuse_buffers=True)
            vectors.append(encoded)
            prefixes += states
        if not vectors:
            return np.zeros((0, model.encoder.dim), np.float32), prefixes
        return np.concatenate(vectors), prefixes

    # -- housekeeping -------------------------------------------------------------------------------------------
    def housekeeping(self) -> None:
        """Publish the backlog and trim entries every group (the worker's, the archive's) is done with off the
        owned partitions."""
        metrics.STREAM_LAG.set(stream_backlog(self.client, self.keys))
        for partition in self.owned:
            stream = self.keys.stream(partition)
            floor = trim_floor(self.client, stream)
            if floor:
                self.client.xtrim(stream, minid=floor, approximate=True)
