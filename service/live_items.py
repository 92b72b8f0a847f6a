"""Items added live (POST /v1/items): embedded from their content, searched beside the index until it is rebuilt.

An item no one has acted on yet is known by its content alone (training/item_tower.py), so the version's
content_tower.onnx gives it the vector training would have: category, seller and attributes through the
version's vocabularies, title and description through text_encoder.onnx and tokenizer.json. No torch.

The fresh items are an exact side index, not rows added to the FAISS index: requests search the live index from
many threads, FAISS does not allow an add during a search, and copying a large index for each add costs its whole
size. `FreshItems` is immutable; an add builds a new one and swaps the reference, so a search in flight keeps the
one it took. Scoring 10,000 fresh items exactly costs about 0.1 ms (BENCHMARKS.md); a model trained on an items
file that lists them serves them from its own index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract.item_text import TEXT_DIM, TextTokenizer, attribute_tokens, item_text
from contract.manifests import CONTENT_TOWER_FILE, TEXT_FILES
from contract.vocab import Vocabularies
from service.encoder_runner import providers, session_options
from service.settings import container_cpus

TEXT_BATCH = 64


class ItemEmbedder:
    """The version's content tower (and text encoder): item rows in the items-file shape -> unit vectors."""

    def __init__(self, directory: Path, manifest: dict, vocabs: Vocabularies, threads: int | None,
                 use_gpu: bool | None):
        content = manifest["content"]
        self.max_attributes = int(content["max_attributes"])
        options = session_options(threads or container_cpus())
        self.tower = ort.InferenceSession(str(directory / CONTENT_TOWER_FILE), options, providers=providers(use_gpu))
        self.text_encoder, self.tokenizer = None, None
        if content.get("text_encoder"):
            self.text_encoder = ort.InferenceSession(str(directory / TEXT_FILES[0]), options,
                                                     providers=providers(use_gpu))
            self.tokenizer = TextTokenizer((directory / TEXT_FILES[1]).read_text())
        self.codes = {name: {value: code for code, value in enumerate(getattr(vocabs, name).ids) if code > 0}
                      for name in ("categories", "sellers", "attributes")}

    def category_codes(self, rows: list[dict]) -> np.ndarray:
        """(n,) the items' category codes (0: a category the model never saw), for category filters."""
        return self._codes("categories", [row.get("category") for row in rows])

    def embed(self, rows: list[dict]) -> np.ndarray:
        """(n, d) float32 unit vectors of item rows; values the model never saw get code 0 (unknown), as in
        training."""
        category = self.category_codes(rows)
        seller = self._codes("sellers", [row.get("seller") for row in rows])
        attributes = np.zeros((len(rows), self.max_attributes), dtype=np.int64)
        for n, row in enumerate(rows):
            codes = [self.codes["attributes"].get(token, 0)
                     for token in attribute_tokens(row.get("attributes") or "")][: self.max_attributes]
            attributes[n, : len(codes)] = codes
        text = self._text_vectors([item_text(row.get("title") or "", row.get("description") or "") for row in rows])
        vectors = self.tower.run(None, {"category": category, "seller": seller, "attributes": attributes,
                                        "text": text})[0]
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _codes(self, vocab: str, values: list[str | None]) -> np.ndarray:
        return np.array([self.codes[vocab].get(str(value), 0) if value is not None else 0 for value in values],
                        dtype=np.int64)

    def _text_vectors(self, texts: list[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), TEXT_DIM), dtype=np.float32)
        with_text = [n for n, text in enumerate(texts) if text]
        if self.text_encoder is None or not with_text:
            return vectors
        for start in range(0, len(with_text), TEXT_BATCH):
            rows = with_text[start: start + TEXT_BATCH]
            ids, mask = self.tokenizer([texts[n] for n in rows])
            vectors[rows] = self.text_encoder.run(None, {"ids": ids, "mask": mask})[0]
        return vectors


@dataclass(frozen=True)
class FreshItems:
    """The items added live that the serving index does not hold: an exact side index."""

    item_ids: tuple = ()  # as sent (int or text)
    row_of_id: dict[str, int] = field(default_factory=dict)  # str(item id) -> row; never changed once built
    categories: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), np.float32))
    last_id: str = "0"  # the catalogue stream's entry these items reach (service.catalogue)

    def __len__(self) -> int:
        return len(self.item_ids)

    def has(self, item_id: object) -> bool:
        return str(item_id) in self.row_of_id

    def added(self, item_ids: list, categories: np.ndarray, vectors: np.ndarray, last_id: str | None = None
              ) -> FreshItems:
        """A new side index with these items too (the caller skips items it already has)."""
        if not len(item_ids):
            return FreshItems(self.item_ids, self.row_of_id, self.categories, self.vectors, last_id or self.last_id)
        stacked = vectors if not len(self) else np.concatenate([self.vectors, vectors])
        row_of_id = self.row_of_id | {str(item_id): len(self) + n for n, item_id in enumerate(item_ids)}
        return FreshItems(item_ids=(*self.item_ids, *item_ids), row_of_id=row_of_id,
                          categories=np.concatenate([self.categories, categories]),
                          vectors=np.ascontiguousarray(stacked, dtype=np.float32), last_id=last_id or self.last_id)

    def top_k(self, query: np.ndarray, k: int, excluded: set[str], categories: np.ndarray | None,
              allowed: set[str] | None) -> tuple[list, np.ndarray]:
        """(item ids, scores) of the best `k` fresh items for a (d,) query, best first, leaving out `excluded`
        ids, keeping only `categories` (codes) and `allowed` ids when given."""
        if not len(self):
            return [], np.zeros(0, np.float32)
        scores = self.vectors @ query  # (n,): one pass over the side index, cheaper than gathering kept rows
        if allowed is not None:
            kept = np.full(len(self), -np.inf, dtype=np.float32)
            rows = self._rows(allowed)
            kept[rows] = scores[rows]
            scores = kept
        if categories is not None:
            scores[~np.isin(self.categories, categories)] = -np.inf
        scores[self._rows(excluded)] = -np.inf
        k = min(k, len(scores))
        best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.lexsort((best, -scores[best]))]  # by score, ties by row: the order adds came in
        best = best[np.isfinite(scores[best])]
        return [self.item_ids[row] for row in best], scores[best].astype(np.float32)

    def _rows(self, item_ids: set[str]) -> np.ndarray:
        return np.fromiter((row for item_id in item_ids if (row := self.row_of_id.get(item_id)) is not None),
                           dtype=np.int64)
