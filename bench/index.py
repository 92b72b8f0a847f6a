"""ANN index figures: build time, single-query p50/p99, batch-64 QPS and recall@100 against exact search,
for Flat, IVF and HNSW at 100k and 1M items, d=64 and d=128.

    python bench/index.py [--sizes 100000,1000000] [--dims 64,128] [--artifacts DIR] [--quick]

Vectors: by default clustered unit vectors with Zipf-sized clusters (the shape of item-tower outputs; isotropic
random vectors would be a worst case that says nothing); with --artifacts, an export's real item vectors,
repeated with small noise up to each size. Queries are unit vectors near random items (user-like). Search runs
on one thread (one per worker process, as the service does). Prints a table and writes
bench/results/index.{json,png}. Target (issue 4): 1M items, d=64, built in <= 2 min with recall@100 >= 0.95
and single-query p99 <= 5 ms.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss
import numpy as np
from rich.table import Table

from cli.console import make_console
from index_builder.faiss_index import build_index, factory_for

RESULTS = Path(__file__).resolve().parent / "results"
K = 100


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def item_vectors(n: int, dim: int, artifacts: Path | None, rng: np.random.Generator) -> np.ndarray:
    if artifacts is not None:
        real = np.load(artifacts / "item_vectors.npy")[1:]
        if real.shape[1] != dim:
            raise SystemExit(f"the artifacts have d={real.shape[1]}, asked for d={dim}")
        picks = rng.integers(0, len(real), n)
        return unit(real[picks] + 0.05 * rng.normal(size=(n, dim)) / np.sqrt(dim))
    n_clusters = max(16, n // 500)
    sizes = 1.0 / np.arange(1, n_clusters + 1) ** 0.8
    cluster = rng.choice(n_clusters, size=n, p=sizes / sizes.sum())
    centres = unit(rng.normal(size=(n_clusters, dim)))
    return unit(centres[cluster] + 0.35 * rng.normal(size=(n, dim)).astype(np.float32) / np.sqrt(dim) * 3)


def latency(index: faiss.Index, queries: np.ndarray) -> tuple[float, float, float]:
    """(p50 ms, p99 ms) of single queries and queries/s in batches of 64, on one thread."""
    faiss.omp_set_num_threads(1)
    timings = []
    for query in queries[:1000]:
        started = time.perf_counter()
        index.search(query[None], K)
        timings.append((time.perf_counter() - started) * 1000)
    started, done = time.perf_counter(), 0
    for start in range(0, min(len(queries), 2048), 64):
        index.search(queries[start:start + 64], K)
        done += len(queries[start:start + 64])
    qps = done / (time.perf_counter() - started)
    faiss.omp_set_num_threads(0 or faiss.omp_get_max_threads())
    return float(np.percentile(timings, 50)), float(np.percentile(timings, 99)), qps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dims", default="64,128")
    parser.add_argument("--kinds", default="flat,ivf,hnsw")
    parser.add_argument("--artifacts", type=Path, help="use this export's real item vectors")
    parser.add_argument("--quick", action="store_true", help="1M items, d=64, IVF and Flat only")
    args = parser.parse_args()
    sizes, dims, kinds = ([1_000_000], [64], ["flat", "ivf"]) if args.quick else (
        [int(s) for s in args.sizes.split(",")], [int(d) for d in args.dims.split(",")], args.kinds.split(","))
    console = make_console()
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        for dim in dims:
            vectors = item_vectors(n, dim, args.artifacts, rng)
            queries = unit(vectors[rng.integers(0, n, 2048)] + 0.5 * rng.normal(size=(2048, dim)) / np.sqrt(dim))
            for kind in kinds:
                with console.status(f"{kind}: {n:,} x {dim}"):
                    built = build_index(vectors, queries[:500], factory_for(kind, n), k=K, recall_floor=0.95,
                                        use_gpu=False)
                    truth = faiss.knn(queries[500:1000], vectors, K, metric=faiss.METRIC_INNER_PRODUCT)[1]
                    found = built.index.search(queries[500:1000], K)[1]
                    recall = float(np.mean([len(np.intersect1d(a, b)) / K for a, b in zip(found, truth, strict=True)]))
                    p50, p99, qps = latency(built.index, queries[1000:])
                rows.append({"items": n, "dim": dim, "index": kind, "params": built.params,
                             "build_s": built.build_seconds, "p50_ms": p50, "p99_ms": p99, "batch64_qps": qps,
                             "recall@100": recall})
                console.print(rows[-1])
    table = Table(title="FAISS indexes (search on 1 thread; recall@100 on held-out queries)")
    for column in ("items", "d", "index", "params", "build s", "p50 ms", "p99 ms", "batch-64 QPS", "recall@100"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(f"{row['items']:,}", str(row["dim"]), row["index"], json.dumps(row["params"]),
                      f"{row['build_s']:.1f}", f"{row['p50_ms']:.2f}", f"{row['p99_ms']:.2f}",
                      f"{row['batch64_qps']:,.0f}", f"{row['recall@100']:.4f}")
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "index.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
