"""`recall build-index`: an export -> a tuned, verified FAISS index, published with the export's model files as
one self-contained version."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np

from index_builder.faiss_index import build_index, factory_for
from index_builder.gate import ServedFiles, run_gate
from index_builder.versions import IndexRejected, current_version, open_version, publish

MAX_ITEM_QUERIES = 2000


class RecallTooLow(RuntimeError):
    """The approximate index misses too much of the exact top-k: it is not published."""


@dataclass
class BuildReport:
    version: str
    manifest: dict


def recall_queries(artifacts: Path, item_vectors: np.ndarray) -> np.ndarray:
    """Real user vectors from the export, plus a sample of item vectors (item-to-item lookups)."""
    sample = artifacts / "sample_user_vectors.npy"
    users = np.load(sample, allow_pickle=False) if sample.exists() else np.zeros((0, item_vectors.shape[1]), np.float32)
    rows = np.random.default_rng(0).choice(len(item_vectors), min(MAX_ITEM_QUERIES, len(item_vectors)),
                                           replace=False)
    return np.concatenate([users, item_vectors[rows]]).astype(np.float32)


def build_and_publish(artifacts: str | Path, root: str | Path, kind: str = "auto", recall_floor: float = 0.95,
                      k: int = 100, keep: int = 3, use_gpu: bool | None = None, factory: str | None = None,
                      gate_events: Path | None = None, gate_tolerance: float = 0.02,
                      on_step: Callable[[str], None] = lambda step: None) -> BuildReport:
    """Build over every real item (code 0 is padding), check recall, gate, publish; `RecallTooLow` below the
    floor, `GateRefused` when the candidate scores worse than the live version on `gate_events` (then nothing
    under `root` changes). `factory` (a faiss index_factory string) overrides `kind`."""
    artifacts = Path(artifacts)
    model_manifest = json.loads((artifacts / "manifest.json").read_text())
    all_vectors = np.load(artifacts / "item_vectors.npy", allow_pickle=False)
    id_map = np.arange(1, len(all_vectors), dtype=np.int64)
    vectors = np.ascontiguousarray(all_vectors[1:])
    started = time.perf_counter()
    on_step(f"building {factory or factory_for(kind, len(vectors))} over {len(vectors):,} items, tuning it to "
            f"recall@{k} >= {recall_floor}")
    built = build_index(vectors, recall_queries(artifacts, vectors), factory or factory_for(kind, len(vectors)), k,
                        recall_floor, use_gpu)
    measured = next(iter(built.recall.values()))
    if measured < recall_floor:
        raise RecallTooLow(f"{built.factory} index reaches {next(iter(built.recall))} = {measured:.4f}, below the "
                           f"floor {recall_floor}: not published (try --type flat or hnsw, or another --factory)")
    gate = None
    if gate_events is not None:
        on_step(f"quality gate on {gate_events}")
        candidate = ServedFiles.of_export(artifacts, built.index, id_map)
        gate = run_gate(candidate, live_files(root), Path(gate_events), gate_tolerance)
    manifest = {
        "model_version": model_manifest["model_version"], "metric": "inner_product", "factory": built.factory,
        "search_params": built.params, "build_seconds": round(built.build_seconds, 2),
        "total_seconds": round(time.perf_counter() - started, 2), "built_on": built.device,
        "recall": built.recall, "recall_floor": recall_floor, "faiss_version": faiss.__version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "model": model_manifest, "gate": gate,
    }
    on_step(f"publishing under {root}")
    version = publish(root, built.index, id_map, manifest, artifacts, keep)
    return BuildReport(version=version, manifest=manifest)


def live_files(root: str | Path) -> ServedFiles | None:
    """The live version's encoder and index, or None when nothing (servable) is live: a candidate then has
    nothing to be compared with."""
    if current_version(root) is None:
        return None
    try:
        live = open_version(root)
    except IndexRejected:
        return None
    return ServedFiles(Path(root) / "versions" / live.version, live.manifest["model"], live.index, live.id_map)
