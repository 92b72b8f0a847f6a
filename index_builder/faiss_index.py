"""Item vectors -> a FAISS inner-product index from a factory string (chosen by catalogue size, or the user's
own, such as "IVF65536,PQ32"), its search parameter tuned with faiss's ParameterSpace until recall@k against
exact search reaches a floor. Numpy in, `(scores, ids)` out, like faiss itself."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import faiss
import numpy as np
from faiss.contrib.evaluation import knn_intersection_measure

logger = logging.getLogger(__name__)

FLAT_UP_TO = 200_000  # items: below this an exact scan is fast enough (about 2 ms at d=64 here)
# The search parameter each index family is tuned on, from cheap to thorough (ParameterSpace names).
TUNED = {"nprobe": (8, 16, 32, 64, 128, 256, 512, 1024, 2048), "efSearch": (128, 256, 512, 1024)}
# Tune a little above the floor: recall measured on the tuning queries overstates recall on unseen ones.
TUNING_MARGIN = 0.01
MAX_TRAINING_VECTORS = 200_000


@dataclass
class BuiltIndex:
    index: faiss.Index
    factory: str  # faiss.index_factory's description of it
    params: dict = field(default_factory=dict)  # search parameters to apply after loading
    build_seconds: float = 0.0
    recall: dict[str, float] = field(default_factory=dict)  # "recall@k" -> measured value
    device: str = "cpu"


class BadFactory(ValueError):
    """A factory string faiss cannot parse, or cannot build on this catalogue."""


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def factory_for(kind: str, n_items: int) -> str:
    """The factory string of `kind` (auto, flat, ivf, hnsw) for a catalogue of `n_items`."""
    kind = ("flat" if n_items <= FLAT_UP_TO else "ivf") if kind == "auto" else kind
    if kind == "flat":
        return "Flat"
    if kind == "ivf":
        return f"IVF{int(max(16, min(65_536, 4 * np.sqrt(n_items))))},Flat"
    if kind == "hnsw":
        return "HNSW32,Flat"
    raise ValueError(f"unknown index type {kind!r} (auto, flat, ivf or hnsw)")


def tuned_parameter(index: faiss.Index) -> str | None:
    """The search parameter that trades speed for recall on this index, if any."""
    if faiss.try_extract_index_ivf(index) is not None:
        return "nprobe"
    if isinstance(faiss.downcast_index(index), faiss.IndexHNSW):
        return "efSearch"
    return None


def apply_params(index: faiss.Index, params: dict) -> None:
    """Set the tuned search parameters on a loaded index."""
    space = faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, value)


def recall_at_k(index: faiss.Index, queries: np.ndarray, truth: np.ndarray, k: int) -> float:
    """Share of the exact top-k that the index finds."""
    return float(knn_intersection_measure(index.search(queries, k)[1], truth))


def _empty_index(factory: str, dim: int) -> faiss.Index:
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError:
        raise BadFactory(f"faiss cannot parse the index factory string {factory!r}") from None
    if isinstance(index, faiss.IndexHNSW):
        index.hnsw.efConstruction = 64
    return index


def _train_and_add(index: faiss.Index, vectors: np.ndarray, use_gpu: bool) -> tuple[faiss.Index, str]:
    """Train (when needed) and fill `index`, on the GPU when asked for and faiss has a GPU version of it; the
    result always lives on the CPU."""
    if use_gpu and not isinstance(index, faiss.IndexHNSW):
        try:
            gpu_index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
        except RuntimeError as error:  # not every factory string has a GPU implementation
            logger.warning("building on the CPU: %s", str(error).splitlines()[0])
        else:
            gpu_index.train(vectors)
            gpu_index.add(vectors)
            return faiss.index_gpu_to_cpu(gpu_index), "gpu"
    if not index.is_trained:
        sample = vectors[np.random.default_rng(0).choice(len(vectors), min(len(vectors), MAX_TRAINING_VECTORS),
                                                         replace=False)]
        try:
            index.train(sample)
        except RuntimeError as error:
            raise BadFactory(f"faiss could not train the index on {len(sample):,} vectors: "
                             f"{str(error).splitlines()[0]}") from None
    index.add(vectors)
    return index, "cpu"


def build_index(vectors: np.ndarray, queries: np.ndarray, factory: str = "Flat", k: int = 100,
                recall_floor: float = 0.95, use_gpu: bool | None = None) -> BuiltIndex:
    """Build `factory` over `vectors` (row i gets id i) and tune its search parameter on `queries` until
    recall@k against exact search reaches `recall_floor` (or the largest setting is reached)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, len(vectors))
    started = time.perf_counter()
    index, device = _train_and_add(_empty_index(factory, vectors.shape[1]), vectors,
                                   gpu_available() if use_gpu is None else use_gpu)
    build_seconds = time.perf_counter() - started
    truth = faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)[1]
    params: dict = {}
    recall = recall_at_k(index, queries, truth, k)
    name = tuned_parameter(index)
    if name is not None:
        limit = faiss.extract_index_ivf(index).nlist if name == "nprobe" else max(TUNED[name])
        for value in [value for value in TUNED[name] if value <= limit] or [limit]:
            params = {name: value}
            apply_params(index, params)
            recall = recall_at_k(index, queries, truth, k)
            if recall >= min(recall_floor + TUNING_MARGIN, 1.0):
                break
    logger.info("%s index of %d items built in %.1f s on %s, recall@%d %.4f %s", factory, len(vectors),
                build_seconds, device, k, recall, params)
    return BuiltIndex(index=index, factory=factory, params=params, build_seconds=build_seconds,
                      recall={f"recall@{k}": recall}, device=device)
