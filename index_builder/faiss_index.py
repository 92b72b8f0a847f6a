"""Item vectors -> a FAISS inner-product index, its type chosen by catalogue size, its search parameter tuned
until recall@k against exact search reaches a floor. Numpy in, `(scores, ids)` out, like faiss itself."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import faiss
import numpy as np

logger = logging.getLogger(__name__)

FLAT_UP_TO = 200_000  # items: below this an exact scan is fast enough (about 2 ms at d=64 here)
IVF_PROBES = (8, 16, 32, 64, 128, 256, 512)
HNSW_EF_SEARCH = (128, 256, 512, 1024)
# Tune a little above the floor: recall measured on the tuning queries overstates recall on unseen ones.
TUNING_MARGIN = 0.01


@dataclass
class BuiltIndex:
    index: faiss.Index
    kind: str
    params: dict = field(default_factory=dict)  # search parameters to apply after loading
    build_seconds: float = 0.0
    recall: dict[str, float] = field(default_factory=dict)  # "recall@k" -> measured value
    device: str = "cpu"


def gpu_available() -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def choose_kind(n_items: int) -> str:
    return "flat" if n_items <= FLAT_UP_TO else "ivf"


def apply_params(index: faiss.Index, params: dict) -> None:
    """Set the tuned search parameters on a loaded index."""
    if "nprobe" in params:
        faiss.extract_index_ivf(index).nprobe = int(params["nprobe"])
    if "ef_search" in params:
        index.hnsw.efSearch = int(params["ef_search"])


def exact_top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    exact = faiss.IndexFlatIP(vectors.shape[1])
    exact.add(vectors)
    return exact.search(queries, k)[1]


def recall_at_k(index: faiss.Index, queries: np.ndarray, truth: np.ndarray, k: int) -> float:
    found = index.search(queries, k)[1]
    hits = sum(len(np.intersect1d(row, expected[expected >= 0])) for row, expected in zip(found, truth,
                                                                                            strict=True))
    return hits / max(int((truth >= 0).sum()), 1)


def _train_and_add(index: faiss.Index, vectors: np.ndarray, use_gpu: bool) -> tuple[faiss.Index, str]:
    """Train (when needed) and fill `index`, on the GPU when asked for; the result always lives on the CPU."""
    if use_gpu and not isinstance(index, faiss.IndexHNSW):
        resources = faiss.StandardGpuResources()
        gpu_index = faiss.index_cpu_to_gpu(resources, 0, index)
        gpu_index.train(vectors)
        gpu_index.add(vectors)
        return faiss.index_gpu_to_cpu(gpu_index), "gpu"
    if not index.is_trained:
        sample = vectors[np.random.default_rng(0).choice(len(vectors), min(len(vectors), 200_000), replace=False)]
        index.train(sample)
    index.add(vectors)
    return index, "cpu"


def _empty_index(kind: str, n_items: int, dim: int) -> faiss.Index:
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "ivf":
        n_lists = int(max(16, min(65_536, 4 * np.sqrt(n_items))))
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, n_lists, faiss.METRIC_INNER_PRODUCT)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 64
        return index
    raise ValueError(f"unknown index type {kind!r} (flat, ivf or hnsw)")


def build_index(vectors: np.ndarray, queries: np.ndarray, kind: str = "auto", k: int = 100,
                recall_floor: float = 0.95, use_gpu: bool | None = None) -> BuiltIndex:
    """Build over `vectors` (row i gets id i) and tune the search parameter on `queries` until recall@k
    against exact search reaches `recall_floor` (or the largest setting is reached)."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    kind = choose_kind(len(vectors)) if kind == "auto" else kind
    k = min(k, len(vectors))
    started = time.perf_counter()
    index, device = _train_and_add(_empty_index(kind, len(vectors), vectors.shape[1]), vectors,
                                   gpu_available() if use_gpu is None else use_gpu)
    build_seconds = time.perf_counter() - started
    truth = exact_top_k(vectors, queries, k)
    params: dict = {}
    settings = {"ivf": ("nprobe", IVF_PROBES), "hnsw": ("ef_search", HNSW_EF_SEARCH)}.get(kind)
    recall = recall_at_k(index, queries, truth, k)
    if settings is not None:
        name, values = settings
        for value in values:
            params = {name: value}
            apply_params(index, params)
            recall = recall_at_k(index, queries, truth, k)
            if recall >= min(recall_floor + TUNING_MARGIN, 1.0):
                break
    logger.info("%s index of %d items built in %.1f s on %s, recall@%d %.4f %s", kind, len(vectors), build_seconds,
                device, k, recall, params)
    return BuiltIndex(index=index, kind=kind, params=params, build_seconds=build_seconds,
                      recall={f"recall@{k}": recall}, device=device)
