"""Items added live, in Redis: the rows as sent (a stream, model-free) and each model version's vectors of them."""

from __future__ import annotations

import numpy as np
import orjson

from service.store.keys import Keys, RedisClient

READ_CHUNK = 1000


def append_items(client: RedisClient, keys: Keys, rows: list[dict], model_version: str,
                 vectors: np.ndarray) -> None:
    """All of `rows` and their vectors under `model_version`, or (one transaction) none of them."""
    pipe = client.pipeline(transaction=True)
    for row, vector in zip(rows, vectors, strict=True):
        pipe.xadd(keys.items, {"item": orjson.dumps(row)})
        pipe.hset(keys.item_vectors(model_version), str(row["item_id"]), vector.astype(np.float32).tobytes())
    pipe.execute()


def items_after(client: RedisClient, keys: Keys, last_id: str) -> tuple[list[dict], str]:
    """(the rows added after stream entry `last_id`, in order; the last entry's id)."""
    rows = []
    while True:
        entries = client.xrange(keys.items, min=f"({last_id}" if last_id != "0" else "-", count=READ_CHUNK)
        for entry_id, fields in entries:
            rows.append(orjson.loads(fields[b"item"]))
            last_id = entry_id.decode()
        if len(entries) < READ_CHUNK:
            return rows, last_id


def stored_vectors(client: RedisClient, keys: Keys, model_version: str, item_ids: list[str],
                   dim: int) -> list[np.ndarray | None]:
    """The vectors `model_version` gave these items before, None where it has none."""
    if not item_ids:
        return []
    found = client.hmget(keys.item_vectors(model_version), item_ids)
    return [None if raw is None or len(raw) != 4 * dim else np.frombuffer(raw, dtype=np.float32) for raw in found]


def store_vectors(client: RedisClient, keys: Keys, model_version: str, item_ids: list[str],
                  vectors: np.ndarray) -> None:
    if item_ids:
        client.hset(keys.item_vectors(model_version),
                    mapping={item_id: vector.astype(np.float32).tobytes()
                             for item_id, vector in zip(item_ids, vectors, strict=True)})
