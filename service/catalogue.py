"""The live catalogue: items added through POST /v1/items, kept in Redis and served by every replica and version.

- An add embeds the items with the live version's content tower, appends them (rows and vectors) to Redis in one
  transaction, and puts them into that version's fresh items at once: retrievable by the next request.
- `sync` brings a serving model up to the stream: at load (a restart, a new version, another replica's adds)
  and on every index poll. A version reuses the vectors it stored; a new version embeds the rows again with its
  own content tower, so publishing folds the added items into the new model. Items a version's own catalogue
  already has (it was trained with them) are served from its index, not from the fresh items.
"""

from __future__ import annotations

import logging

import numpy as np

from service import metrics
from service.serving_model import ServingModel
from service.store.catalogue import append_items, items_after, store_vectors, stored_vectors
from service.store.keys import Keys, RedisClient

logger = logging.getLogger(__name__)


class CannotEmbed(RuntimeError):
    """The live version was exported without a content tower (before issue 25): it cannot embed new items."""


class LiveCatalogue:
    def __init__(self, client: RedisClient, keys: Keys):
        self.client, self.keys = client, keys

    def add(self, model: ServingModel, rows: list[dict]) -> tuple[int, int]:
        """Add the items new to `model` (rows in the items-file shape, distinct ids); returns (added, known)."""
        if model.embedder is None:
            raise CannotEmbed(f"model {model.model_version} has no content tower: it knows items only by their id. "
                              "Train with item content (model.item_attributes, model.item_text or "
                              "model.semantic_id_levels) to add items live")
        with model.fresh_lock:
            new = [row for row in rows if not knows(model, row["item_id"])]
            if new:
                vectors = model.embedder.embed(new)
                append_items(self.client, self.keys, new, model.model_version, vectors)
                model.fresh = model.fresh.added([row["item_id"] for row in new],
                                                model.embedder.category_codes(new), vectors)
        metrics.ITEMS_ADDED.inc(len(new))
        return len(new), len(rows) - len(new)

    def sync(self, model: ServingModel) -> int:
        """Bring `model`'s fresh items up to the stream; returns how many it gained."""
        if model.embedder is None or model.index is None:
            return 0
        with model.fresh_lock:
            rows, last_id = items_after(self.client, self.keys, model.fresh.last_id)
            new = [row for row in {str(row["item_id"]): row for row in rows}.values()
                   if not knows(model, row["item_id"])]
            ids = [str(row["item_id"]) for row in new]
            vectors = np.zeros((len(new), model.encoder.dim), dtype=np.float32)
            known_vectors = stored_vectors(self.client, self.keys, model.model_version, ids, model.encoder.dim)
            missing = [n for n, vector in enumerate(known_vectors) if vector is None]
            for n, vector in enumerate(known_vectors):
                if vector is not None:
                    vectors[n] = vector
            if missing:
                vectors[missing] = model.embedder.embed([new[n] for n in missing])
                store_vectors(self.client, self.keys, model.model_version, [ids[n] for n in missing],
                              vectors[missing])
            model.fresh = model.fresh.added([row["item_id"] for row in new], model.embedder.category_codes(new),
                                            vectors, last_id)
        if new:
            logger.info("model %s: %d items added live (%d embedded)", model.model_version, len(new), len(missing))
        return len(new)


def knows(model: ServingModel, item_id: object) -> bool:
    """Whether `model` serves this item already: from its own catalogue or added live."""
    return model.vocabs.items.code_of(item_id) > 0 or model.fresh.has(item_id)
