"""What an item added live costs (issue 25): the text encoder and content tower per item, POST /v1/items under
sequential load, the time until a new item is retrievable, and the exact side index as it grows.

    python bench/items_live.py [--batches 20] [--batch-items 100]

Trains a small content model (titles read by the sentence encoder, semantic ids) on a synthetic world for one
epoch (quality does not matter here, only cost), exports and publishes it, and starts `recall serve`'s embedded
default on loopback. Prints a table; writes bench/results/items_live.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import onnxruntime as ort
import orjson
from rich.table import Table

from cli.console import make_console
from contract.item_text import TextTokenizer
from contract.manifests import CONTENT_TOWER_FILE, TEXT_FILES
from evaluation.synth import SynthConfig, generate, write_world
from service.encoder_runner import session_options
from service.ingest import signed_headers
from service.live_items import FreshItems
from service.server_thread import ServerThread
from service.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"
SECRET = "bench-secret"
DESCRIPTION = ("A comfortable everyday product with a durable build, made from quality materials, easy to clean, "
               "and backed by a two year warranty; available in several sizes and colours.")


def content_model(directory: Path) -> Path:
    """A published index of a small content model: (index root)."""
    from index_builder.build import build_and_publish
    from model_export.export import export_run
    from tests.support.runs import train_tiny_run

    write_world(SynthConfig(n_users=300, n_items=500, seed=5), directory / "world")
    run = train_tiny_run(directory / "world", directory / "run", epochs=1, item_text=True, semantic_id_levels=2)
    export_run(run, directory / "artifacts")
    build_and_publish(directory / "artifacts", directory / "index")
    return directory / "index"


def per_item_ms(run, batch: int, repeats: int = 5) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return 1000 * best / batch


def onnx_costs(version: Path, titles: list[str]) -> list[dict]:
    """ms per item of the text encoder (titles alone, titles with a description) and of the content tower."""
    tokenizer = TextTokenizer((version / TEXT_FILES[1]).read_text())
    text = ort.InferenceSession(str(version / TEXT_FILES[0]), session_options(1), providers=["CPUExecutionProvider"])
    tower = ort.InferenceSession(str(version / CONTENT_TOWER_FILE), session_options(1),
                                 providers=["CPUExecutionProvider"])
    max_attributes = tower.get_inputs()[2].shape[1] if isinstance(tower.get_inputs()[2].shape[1], int) else 1
    rows = []
    for label, texts in (("title", titles), ("title + 30-word description", [f"{t}. {DESCRIPTION}" for t in titles])):
        for batch in (1, 64):
            ids, mask = tokenizer(texts[:batch])
            rows.append({"step": f"text encoder, {label}", "batch": batch,
                         "ms_per_item": per_item_ms(lambda ids=ids, mask=mask: text.run(None, {"ids": ids,
                                                                                              "mask": mask}), batch)})
    batch = 64
    inputs = {"category": np.ones(batch, np.int64), "seller": np.ones(batch, np.int64),
              "attributes": np.zeros((batch, max_attributes), np.int64),
              "text": np.random.default_rng(0).normal(size=(batch, 384)).astype(np.float32)}
    rows.append({"step": "content tower", "batch": batch,
                 "ms_per_item": per_item_ms(lambda: tower.run(None, inputs), batch)})
    return rows


def service_costs(index_root: Path, work: Path, titles: list[str], batches: int, batch_items: int) -> dict:
    settings = Settings(redis_url=None, data_dir=work / "var", index_root=index_root, webhook_secret=SECRET)
    service = ServerThread(settings).start()
    try:
        import httpx

        with httpx.Client(base_url=service.url, timeout=60) as client:
            latencies = []
            for n in range(batches):
                items = [{"item_id": f"new-{n}-{i}", "category": "c", "title": titles[i % len(titles)],
                          "description": DESCRIPTION} for i in range(batch_items)]
                body = orjson.dumps({"items": items})
                started = time.perf_counter()
                response = client.post("/v1/items", content=body, headers=signed_headers(SECRET, body))
                latencies.append(time.perf_counter() - started)
                response.raise_for_status()
            body = orjson.dumps({"items": [{"item_id": "probe", "title": titles[0]}]})
            started = time.perf_counter()
            client.post("/v1/items", content=body, headers=signed_headers(SECRET, body)).raise_for_status()
            while "probe" not in [item["item_id"] for item in client.post(
                    "/v1/recall", json={"user_id": "u", "k": 10, "allowed_item_ids": ["probe"]}).json()["items"]]:
                pass
            retrievable_ms = 1000 * (time.perf_counter() - started)
    finally:
        service.stop()
    return {"batch_items": batch_items, "batches": batches,
            "items_per_second": batch_items * batches / sum(latencies),
            "batch_p50_ms": 1000 * statistics.median(latencies),
            "batch_max_ms": 1000 * max(latencies), "post_to_retrievable_ms": retrievable_ms}


def side_index_costs(dim: int = 64) -> list[dict]:
    """The exact side index: one query's top 100 (200 of the items excluded, as a user's viewed items are), and one
    add of 100 items, as it grows."""
    rng = np.random.default_rng(0)
    rows = []
    for size in (1_000, 10_000, 100_000):
        vectors = rng.normal(size=(size, dim)).astype(np.float32)
        fresh = FreshItems().added(list(range(size)), np.zeros(size, np.int64), vectors)
        query = rng.normal(size=dim).astype(np.float32)
        viewed = {str(item_id) for item_id in rng.choice(size, 200, replace=False)}
        search_ms = per_item_ms(lambda fresh=fresh, query=query, viewed=viewed: fresh.top_k(query, 100, viewed, None,
                                                                                           None), 1)
        more = rng.normal(size=(100, dim)).astype(np.float32)
        add_ms = per_item_ms(lambda fresh=fresh, more=more: fresh.added(list(range(100)), np.zeros(100, np.int64),
                                                                         more), 1)
        rows.append({"fresh_items": size, "top100_ms": search_ms, "add_100_ms": add_ms,
                     "memory_mb": round(vectors.nbytes / 2**20, 1)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--batch-items", type=int, default=100)
    args = parser.parse_args()
    console = make_console()
    titles = generate(SynthConfig(n_users=10, n_items=200, seed=1))[1].title.tolist()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        console.print("training and publishing a small content model ...")
        index_root = content_model(work)
        version = next((index_root / "versions").iterdir())
        results = {"onnx": onnx_costs(version, titles),
                   "service": service_costs(index_root, work, titles, args.batches, args.batch_items),
                   "side_index": side_index_costs()}
    table = Table(title="what an item added live costs (one thread)")
    for column in ("step", "batch", "ms per item"):
        table.add_column(column, justify="left" if column == "step" else "right")
    for row in results["onnx"]:
        table.add_row(row["step"], str(row["batch"]), f"{row['ms_per_item']:.2f}")
    console.print(table)
    service = results["service"]
    console.print(f"POST /v1/items, {service['batch_items']} items a batch with title and description: "
                  f"{service['items_per_second']:.0f} items/s, batch p50 {service['batch_p50_ms']:.0f} ms, max "
                  f"{service['batch_max_ms']:.0f} ms; POST to retrievable {service['post_to_retrievable_ms']:.0f} ms")
    side = Table(title="the exact side index of items added live (d=64)")
    for column in ("fresh items", "top-100 of one query, ms", "add 100, ms", "memory, MB"):
        side.add_column(column, justify="right")
    for row in results["side_index"]:
        side.add_row(f"{row['fresh_items']:,}", f"{row['top100_ms']:.2f}", f"{row['add_100_ms']:.2f}",
                     f"{row['memory_mb']}")
    console.print(side)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "items_live.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
