"""A user's state in Redis: history, precomputed vectors and the last stream entry applied, in one hash.

    <prefix>:{u:<user>}:state
      history          JSON sessions (service.history), original ids
      last_id          the newest stream entry applied: older ones are skipped on redelivery
      model_version    the model that computed the vectors
      contexts         JSON list of the (context, scenario) keys the vectors were computed for
      vectors          float32 bytes, one row per context
      viewed           int32 bytes: the model's codes of the history's items (for filter_viewed)
      updated_ms       when the vectors were written
    <prefix>:{u:<user>}:prefix   the history's prefix state (contract.prefix_state), expiring after
                                 RECALL_PREFIX_TTL_S; only for models with a query step

The worker writes the whole state, prefix state included, in one compare-and-set on `last_id`, so a stalled
worker that lost its partition cannot overwrite what the new owner applied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from service.history import load_history
from service.store.keys import Keys, RedisClient

# KEYS: state, prefix state. ARGV: expected last_id, prefix state ('' = none: delete any), its TTL ms, fields.
WRITE_IF_UNCHANGED = """
local current = redis.call('HGET', KEYS[1], 'last_id') or ''
if current ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3]) else redis.call('DEL', KEYS[2]) end
return 1
"""


@dataclass
class UserState:
    history: dict
    last_id: str
    model_version: str | None = None
    contexts: list[str] | None = None
    vectors: np.ndarray | None = None  # (n_contexts, d)
    viewed_codes: np.ndarray | None = None  # (n_viewed,) item codes under `model_version`
    updated_ms: int | None = None
    raw_prefix: bytes | None = None  # the stored prefix state, when it was read with the state

    def vector_for(self, context: str | None, scenario: str | None, model_version: str,
                   context_free: bool = False) -> np.ndarray | None:
        """The precomputed vector of this context and scenario, if `model_version` made it; of a `context_free`
        model, the one it stored, whatever the context."""
        if self.vectors is None or self.model_version != model_version or self.contexts is None:
            return None
        if context_free:
            return self.vectors[0] if len(self.vectors) else None
        key = context_key(context, scenario)
        return self.vectors[self.contexts.index(key)] if key in self.contexts else None


def context_key(context: str | None, scenario: str | None) -> str:
    return orjson.dumps([context, scenario]).decode()


def read_histories(client: RedisClient, keys: Keys, user_ids: list[str]) -> list[UserState]:
    """History and last applied entry of each user (empty for users never seen)."""
    pipe = client.pipeline(transaction=False)
    for user_id in user_ids:
        pipe.hmget(keys.user(user_id), ["history", "last_id"])
    return [UserState(history=load_history(history), last_id=(last_id or b"").decode())
            for history, last_id in pipe.execute()]


STATE_FIELDS = ["history", "last_id", "model_version", "contexts", "vectors", "viewed", "updated_ms"]


def read_state(client: RedisClient, keys: Keys, user_id: str, dim: int) -> UserState:
    return _state(client.hmget(keys.user(user_id), STATE_FIELDS), dim)


def read_states(client: RedisClient, keys: Keys, user_ids: list[str], dim: int,
                with_prefix: list[bool] | None = None) -> list[UserState]:
    """Each user's whole state in one round trip (a batch of recall requests), with the raw prefix state of the
    users `with_prefix` marks."""
    with_prefix = with_prefix or [False] * len(user_ids)
    pipe = client.pipeline(transaction=False)
    for user_id, prefix in zip(user_ids, with_prefix, strict=True):
        pipe.hmget(keys.user(user_id), STATE_FIELDS)
        if prefix:
            pipe.get(keys.prefix_state(user_id))
    replies, states = iter(pipe.execute()), []
    for prefix in with_prefix:
        state = _state(next(replies), dim)
        if prefix:
            state.raw_prefix = next(replies)
        states.append(state)
    return states


def _state(fields: list[bytes | None], dim: int) -> UserState:
    history, last_id, model_version, contexts, vectors, viewed, updated_ms = fields
    return UserState(
        history=load_history(history), last_id=(last_id or b"").decode(),
        model_version=model_version.decode() if model_version else None,
        contexts=orjson.loads(contexts) if contexts else None,
        vectors=_vector_rows(vectors, dim),
        viewed_codes=np.frombuffer(viewed, dtype=np.int32) if viewed is not None else None,
        updated_ms=int(updated_ms) if updated_ms else None,
    )


def _vector_rows(raw: bytes | None, dim: int) -> np.ndarray | None:
    """Stored vectors as (n_contexts, dim) rows; None when absent or of another model's dimension."""
    if not raw or len(raw) % (4 * dim):
        return None
    return np.frombuffer(raw, dtype=np.float32).reshape(-1, dim)


def write_states(client: RedisClient, keys: Keys, user_ids: list[str], expected_last_ids: list[str],
                 fields: list[dict], prefixes: list[bytes | None] | None = None, prefix_ttl_ms: int = 0) -> list[bool]:
    """Write each user's fields, and its prefix state (or none), unless their `last_id` moved since it was read;
    True where written."""
    pipe = client.pipeline(transaction=False)
    for n, (user_id, expected, values) in enumerate(zip(user_ids, expected_last_ids, fields, strict=True)):
        flat = [part for name, value in values.items() for part in (name, value)]
        prefix = (prefixes[n] if prefixes is not None else None) or b""
        # Plain EVAL: a Redis Cluster pipeline refuses EVALSHA and has no eval method; Redis caches the script.
        pipe.execute_command("EVAL", WRITE_IF_UNCHANGED, 2, keys.user(user_id), keys.prefix_state(user_id),
                             expected, prefix, max(prefix_ttl_ms, 1), *flat)
    return [bool(result) for result in pipe.execute()]


def state_fields(history: dict, last_id: str, model_version: str, contexts: list[tuple[str | None, str | None]],
                 vectors: np.ndarray, viewed_codes: np.ndarray, now_ms: int) -> dict:
    return {"history": orjson.dumps(history), "last_id": last_id, "model_version": model_version,
            "contexts": orjson.dumps([context_key(*pair) for pair in contexts]),
            "vectors": np.ascontiguousarray(vectors, dtype=np.float32).tobytes(),
            "viewed": np.asarray(viewed_codes, dtype=np.int32).tobytes(), "updated_ms": now_ms}
