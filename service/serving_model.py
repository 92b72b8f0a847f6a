"""The (user encoder, FAISS index) pair the service answers with, loaded together and swapped together.

Both come from one self-contained version directory under the index root, whose manifest names one model for the
index and the encoder, or the version is refused. `ModelHolder` watches the index root's CURRENT, loads a new pair
beside the live one and swaps the reference in one assignment, so a request that took the old pair finishes with it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
from pydantic import ValidationError

from contract.manifests import CONTENT_TOWER_FILE, QUERY_STEP_FILE, FeatureSchema
from contract.prefix_state import PrefixState, prefix_states, query_step_inputs
from contract.vocab import Vocabularies
from index_builder.faiss_index import gpu_available
from index_builder.versions import (
    IndexRejected,
    LoadedIndex,
    current_version,
    open_version,
    verified_manifest,
)
from service import metrics
from service.encoder_runner import OnnxQueryStep, OnnxUserEncoder
from service.history import encoder_inputs
from service.live_items import FreshItems, ItemEmbedder
from service.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class ServingModel:
    model_version: str
    encoder: OnnxUserEncoder
    vocabs: Vocabularies
    schema: FeatureSchema
    index: LoadedIndex | None  # None in a worker: it encodes but never searches
    # TBGRecall's session layout: a request's context token over the user's stored prefix state (service.recall).
    query_step: OnnxQueryStep | None = None
    row_of_code: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # item code -> index row, -1
    category_of_row: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    item_id_of_code: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # original ids
    small_vocab_codes: dict[str, dict[str, int]] = field(default_factory=dict)  # contexts, scenarios, categories
    on_gpu: bool = False
    # The CPU index, kept beside a GPU copy: small filtered sets are scored exactly from its vectors (service.search).
    cpu_index: faiss.Index | None = None
    stored_vectors: bool = False  # cpu_index can give back its rows' vectors
    # onnxruntime sessions are thread-safe; GPU FAISS indexes are not, so GPU searches take turns.
    search_lock: threading.Lock = field(default_factory=threading.Lock)
    # Items added live (service.catalogue): the content tower that embeds them (None: exported before it
    # existed), and the ones this version's index does not hold, replaced whole under `fresh_lock` by each add.
    embedder: ItemEmbedder | None = None
    fresh: FreshItems = field(default_factory=FreshItems)
    fresh_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def index_version(self) -> str | None:
        return self.index.version if self.index else None

    def known(self, vocab: str, value: str | None) -> str | None:
        """`value` when the model knows it, else None (the default context or scenario)."""
        return value if value is not None and value in self.small_vocab_codes[vocab] else None

    def encode(self, histories: list[dict], contexts: list[str | None], scenarios: list[str | None],
               request_time: np.ndarray, reuse_buffers: bool = False) -> np.ndarray:
        """(B, d) unit user vectors; `reuse_buffers` only from the one thread that owns them (the worker)."""
        return self.encoder.encode(self._inputs(histories, contexts, scenarios, request_time, reuse_buffers))

    def _inputs(self, histories: list[dict], contexts: list[str | None], scenarios: list[str | None],
                request_time: np.ndarray, reuse_buffers: bool) -> dict[str, np.ndarray]:
        return encoder_inputs(histories, contexts, scenarios, request_time, self.vocabs, self.schema,
                              out=self.encoder.buffers.view if reuse_buffers else None)

    def encode_with_prefix(self, histories: list[dict], contexts: list[str | None], scenarios: list[str | None],
                           request_time: np.ndarray, first_rows: list[int], last_ids: list[str],
                           reuse_buffers: bool = False) -> tuple[np.ndarray, list[PrefixState]]:
        """`encode`, and the prefix state of the histories of `first_rows` (each user's first row), which
        describe the histories as of stream entries `last_ids`; only when `query_step` is set."""
        batch = self._inputs(histories, contexts, scenarios, request_time, reuse_buffers)
        vectors, outputs = self.encoder.encode_with_prefix(batch)
        previous_starts = [int(histories[row]["sessions"][-1]["start"]) for row in first_rows]
        return vectors, prefix_states(batch, outputs, first_rows, previous_starts, self.model_version, last_ids)

    def query_vectors(self, states: list[PrefixState], contexts: list[str | None], scenarios: list[str | None],
                      request_time: np.ndarray) -> np.ndarray:
        """(B, d) unit user vectors of requests over stored prefix states: one token per block, no history to
        build (`contexts` and `scenarios` as `known` gives them)."""
        context_codes, scenario_codes = self.small_vocab_codes["contexts"], self.small_vocab_codes["scenarios"]
        inputs = query_step_inputs(states, np.array([context_codes.get(c, 0) for c in contexts], np.int64),
                                   np.array([scenario_codes.get(s, 0) for s in scenarios], np.int64),
                                   request_time, self.schema.has_timestamp)
        return self.query_step.run(inputs)


def load_serving_model(settings: Settings, with_index: bool = True) -> ServingModel:
    """The version CURRENT names, read from its own directory only: `IndexRejected` when it is missing, corrupt
    or inconsistent."""
    if with_index:
        index = open_version(settings.index_root)
        version, manifest = index.version, index.manifest
    else:
        version = current_version(settings.index_root)
        if version is None:
            raise IndexRejected(f"{settings.index_root}: no CURRENT index published")
        index, manifest = None, verified_manifest(settings.index_root, version)
    directory = Path(settings.index_root) / "versions" / version
    model_manifest = manifest["model"]
    schema = _feature_schema(directory, model_manifest)
    encoder = OnnxUserEncoder(directory / "user_encoder.onnx", model_manifest,
                              threads=settings.encoder_threads or None, use_gpu=settings.use_gpu)
    query_step = OnnxQueryStep(directory / QUERY_STEP_FILE, settings.use_gpu) \
        if model_manifest.get("query_step") and encoder.has_prefix else None
    model = ServingModel(model_version=model_manifest["model_version"], encoder=encoder,
                         vocabs=Vocabularies.load(directory / "vocabularies.json"),
                         schema=schema, index=index, query_step=query_step)
    model.small_vocab_codes = {name: {value: code for code, value in enumerate(getattr(model.vocabs, name).ids)
                                      if code > 0} for name in ("contexts", "scenarios", "categories")}
    if index is not None:
        model.item_id_of_code = model.vocabs.items.decode(np.arange(len(model.vocabs.items)))
        n_codes = int(model_manifest["n_items"])
        model.row_of_code = np.full(max(n_codes, int(index.id_map.max(initial=0)) + 1), -1, dtype=np.int64)
        model.row_of_code[index.id_map] = np.arange(len(index.id_map))
        with np.load(directory / "item_side.npz", allow_pickle=False) as side:
            category = side["category"]
        model.category_of_row = np.where(index.id_map < len(category),
                                         category[np.minimum(index.id_map, len(category) - 1)], 0)
        model.cpu_index, model.stored_vectors = index.index, _reconstructible(index.index)
        if (directory / CONTENT_TOWER_FILE).is_file() and isinstance(model_manifest.get("content"), dict):
            model.embedder = ItemEmbedder(directory, model_manifest, model.vocabs, threads=1,
                                          use_gpu=settings.use_gpu)
        if (settings.use_gpu is not False) and gpu_available():
            index.index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index.index)
            model.on_gpu = True
    return model


def _reconstructible(index: faiss.Index) -> bool:
    """Make the index able to give back the vectors of given rows (an IVF index needs its direct map, 8 bytes a
    row); False for the kinds that cannot."""
    if index.ntotal == 0:
        return False
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.make_direct_map()
    try:
        index.reconstruct_batch(np.zeros(1, dtype=np.int64))
    except RuntimeError:
        return False
    return True


def _feature_schema(directory: Path, model_manifest: dict) -> FeatureSchema:
    try:
        schema = FeatureSchema.model_validate(model_manifest.get("feature_schema"))
    except ValidationError as error:
        raise IndexRejected(f"{directory}: the manifest's feature_schema is not one this service reads: "
                            f"{error.errors()[0]['loc']} {error.errors()[0]['msg']}") from None
    problem = schema.mismatch()
    if problem:
        raise IndexRejected(f"{directory}: {problem}")
    return schema


class ModelHolder:
    """The live pair, and a watcher thread that swaps in each newly published one."""

    def __init__(self, settings: Settings, with_index: bool = True,
                 sync_items: Callable[[ServingModel], object] | None = None):
        self.settings = settings
        self.with_index = with_index
        # Brings a model's items added live up to date (service.catalogue): before a swap, and at every poll.
        self.sync_items = sync_items
        self.current: ServingModel | None = None
        self.live_version: str | None = None  # the CURRENT name the live pair was loaded from
        self.last_error: str | None = None
        self._refused_version: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refresh_lock = threading.Lock()

    def refresh(self) -> bool:
        """Load the published pair when it differs from the live one; True when a swap happened."""
        with self._refresh_lock:
            published = current_version(self.settings.index_root)
            if published is None or published in (self._refused_version, self.live_version):
                return False
            try:
                fresh = load_serving_model(self.settings, self.with_index)
            except Exception as error:  # a bad publish (rejected, corrupt, unloadable) must not take the service down
                self.last_error = str(error)
                self._refused_version = published
                logger.error("not serving index %s: %s", published, error)
                return False
            self._sync(fresh)
            previous = self.current
            self.current, self.last_error = fresh, None  # one reference assignment: the swap
            self.live_version = published
            metrics.INDEX_SWAPS.inc()
            if previous is not None:
                metrics.SERVING.labels(previous.model_version, previous.index_version or "").set(0)
            metrics.SERVING.labels(fresh.model_version, fresh.index_version or "").set(1)
            logger.info("serving model %s with index %s", fresh.model_version, published)
            return True

    @property
    def refused(self) -> str | None:
        """The published version refused last, with the reason, while it is still the one CURRENT names."""
        if self._refused_version is None or self._refused_version == self.live_version:
            return None
        return f"{self._refused_version}: {self.last_error}"

    def start(self) -> ModelHolder:
        self.refresh()
        self._thread = threading.Thread(target=self._watch, name="index-watcher", daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(self.settings.index_poll_s):
            try:
                if not self.refresh() and self.current is not None:
                    self._sync(self.current)
            except Exception:  # the watcher must outlive any one bad publish
                logger.exception("index refresh failed")

    def _sync(self, model: ServingModel) -> None:
        """Items added live into `model`; a Redis outage costs them until the next poll, never the swap."""
        if self.sync_items is None:
            return
        try:
            self.sync_items(model)
        except Exception as error:
            logger.warning("items added live not synced into model %s: %s", model.model_version, error)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
