"""Top-k over the live index with the request's filters.

Exclusions (viewed and excluded items) are few, so the search fetches k plus their number and drops them after.
A category filter can exclude most of the catalogue, so on the CPU it is a FAISS ID selector (a bitmap over
index rows) applied inside the search; GPU indexes take no selectors, so there the search over-fetches instead.
"""

from __future__ import annotations

import faiss
import numpy as np

from service.serving_model import ServingModel

GPU_CATEGORY_OVERFETCH = 20


def search(model: ServingModel, query: np.ndarray, k: int, excluded_codes: np.ndarray,
           category_codes: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """(item codes, scores) of the best `k` items for one (d,) query vector, best first."""
    index = model.index
    n_rows = len(index.id_map)
    excluded_rows = model.row_of_code[excluded_codes[(excluded_codes > 0) & (excluded_codes < len(model.row_of_code))]]
    excluded_rows = np.unique(excluded_rows[excluded_rows >= 0])
    params, allowed = None, None
    if category_codes is not None:
        allowed = np.isin(model.category_of_row, category_codes)
        allowed[excluded_rows] = False
    fetch = min(k + len(excluded_rows), n_rows)
    if allowed is not None and model.on_gpu:
        fetch = min(fetch * GPU_CATEGORY_OVERFETCH, n_rows)
    elif allowed is not None:
        bitmap = np.packbits(allowed, bitorder="little")
        params = _search_params(index.manifest, faiss.IDSelectorBitmap(bitmap))
        fetch = min(k, int(allowed.sum()))
    if fetch <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    queries = np.ascontiguousarray(query.reshape(1, -1), dtype=np.float32)
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
        keep &= ~np.isin(rows, excluded_rows)
    rows, scores = rows[keep][:k], scores[keep][:k]
    return index.id_map[rows], scores


def _search_params(manifest: dict, selector: faiss.IDSelector) -> faiss.SearchParameters:
    """Parameters carrying the selector and the index's tuned nprobe / efSearch (params replace them)."""
    tuned = manifest.get("search_params", {})
    if "nprobe" in tuned:
        return faiss.SearchParametersIVF(sel=selector, nprobe=int(tuned["nprobe"]))
    if "efSearch" in tuned:
        return faiss.SearchParametersHNSW(sel=selector, efSearch=int(tuned["efSearch"]))
    return faiss.SearchParameters(sel=selector)
