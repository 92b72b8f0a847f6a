"""Top-k over the live index with the request's filters.

Exclusions (viewed and excluded items) are few, so the search fetches k plus their number and drops them after.
A category filter or an allow-list can exclude most of the catalogue, so the allowed rows are applied inside the
search, never by cutting a top-k after it:

- few allowed rows (an allow-list, a small category): each is scored exactly, from the index's own vectors. An
  approximate index searched with a selective filter misses allowed items (IVF probes lists that hold none of
  them, HNSW walks a graph whose allowed nodes are far apart); scoring a few thousand rows costs well under 1 ms;
- many: a FAISS ID selector (a bitmap over index rows) on the CPU; GPU indexes take no selectors, so there the
  search over-fetches instead.
"""

from __future__ import annotations

import faiss
import numpy as np

from service.serving_model import ServingModel

GPU_FILTER_OVERFETCH = 20
EXACT_SCORING_ROWS = 4096


def search(model: ServingModel, query: np.ndarray, k: int, excluded_codes: np.ndarray,
           allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(item codes, scores) of the best `k` items for one (d,) query vector, best first. `allowed`: (n_rows,)
    bool over index rows, None = every row."""
    index = model.index
    n_rows = len(index.id_map)
    excluded_rows = model.row_of_code[excluded_codes[(excluded_codes > 0) & (excluded_codes < len(model.row_of_code))]]
    # Sorted, for a binary-search membership test below: np.unique and np.isin cost about 100 us a request here.
    excluded_rows = np.sort(excluded_rows[excluded_rows >= 0])
    queries = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
    params = None
    if allowed is not None:  # built for this request (recall.allowed_rows), so it is changed in place
        allowed[excluded_rows] = False
        n_allowed = int(allowed.sum())
        if n_allowed <= EXACT_SCORING_ROWS and model.stored_vectors:
            rows, scores = _exact_top_k(model.cpu_index, queries[0], np.flatnonzero(allowed), k)
            return index.id_map[rows], scores
        fetch = min(k, n_allowed)
        if model.on_gpu:
            fetch = min((k + len(excluded_rows)) * GPU_FILTER_OVERFETCH, n_rows)
        else:
            params = _search_params(index.manifest, faiss.IDSelectorBitmap(np.packbits(allowed, bitorder="little")))
    else:
        fetch = min(k + len(excluded_rows), n_rows)
    if fetch <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    if model.on_gpu:
        with model.search_lock:
            scores, rows = index.index.search(queries, fetch)
    else:
        scores, rows = index.index.search(queries, fetch, params=params)
    rows, scores = rows[0], scores[0]
    keep = rows >= 0
    if allowed is not None:
        keep &= allowed[np.maximum(rows, 0)]
    elif len(excluded_rows):
        found = excluded_rows[np.minimum(np.searchsorted(excluded_rows, rows), len(excluded_rows) - 1)]
        keep &= found != rows
    rows, scores = rows[keep][:k], scores[keep][:k]
    return index.id_map[rows], scores


def _exact_top_k(cpu_index: faiss.Index, query: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best `k` of `rows` by inner product with the vectors the index stores (PQ codes decoded), best first."""
    if len(rows) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    scores = cpu_index.reconstruct_batch(rows) @ query
    best = np.argsort(-scores, kind="stable")[:k]
    return rows[best], scores[best].astype(np.float32)


def _search_params(manifest: dict, selector: faiss.IDSelector) -> faiss.SearchParameters:
    """Parameters carrying the selector and the index's tuned nprobe / efSearch (params replace them)."""
    tuned = manifest.get("search_params", {})
    if "nprobe" in tuned:
        return faiss.SearchParametersIVF(sel=selector, nprobe=int(tuned["nprobe"]))
    if "efSearch" in tuned:
        return faiss.SearchParametersHNSW(sel=selector, efSearch=int(tuned["efSearch"]))
    return faiss.SearchParameters(sel=selector)
