"""The service under load on loopback: /v1/recall latency and throughput next to the raw FAISS search, requests
in contexts the worker did not precompute (the query step over stored prefix states, against encoding the whole
history), freshness from webhook to user vector, and the worker's re-encoding throughput.

    python bench/service.py [--sizes 100000,1000000] [--seconds 30] [--quick] [--json PATH] [--workers N]

`--quick`: 1M items, 10-second windows (a few minutes, the catalogue cached under bench/.cache/service).
The service runs as `recall serve` on its embedded default (private redis-server and near-line worker, one API
process per CPU; `--workers 1` for the single process it ran before); the load generator runs in this process.
Prints one table per catalogue, writes bench/results/service.json and a latency plot bench/results/service.png.
Targets (issue 5), 1M items: p99 <= 20 ms at 300 requests/s offered, >= 500 requests/s at saturation, service
overhead <= 2 ms at p50 over the raw search, freshness p99 <= 250 ms at 1,000 events/s. Issue 20: requests that
each carry a context not precomputed, over 200-token histories, p50 <= 3 ms and p99 <= 10 ms at 300 requests/s
and >= 800 requests/s at saturation; the precomputed path >= 1,000 requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import faiss
import httpx
import numpy as np
import orjson
import redis
from rich.table import Table

from bench.catalogue import CONTEXTS, build_catalogue
from bench.loadgen import LoadResult, closed_loop, open_loop
from cli.console import make_console
from index_builder.versions import open_version
from service.ingest import signed_headers
from service.settings import Settings
from service.store.keys import Keys
from service.store.streams import stream_backlog

RESULTS = Path(__file__).resolve().parent / "results"
SECRET, K, N_USERS, EVENTS_PER_USER = "bench-secret", 100, 2000, 40
# Users of the context rows: 22 daily sessions of 8 clicks, each under its own context: 198 history tokens.
N_CONTEXT_USERS, CONTEXT_SESSIONS, CLICKS_PER_SESSION = 500, 22, 8
OFFERED_RPS, CONCURRENCY, FRESHNESS_RATES = 300, 32, (200, 1000)


class Service:
    """`recall serve` in a child process on its embedded default."""

    def __init__(self, index_root: Path, directory: Path, port: int = 8765, workers: int | None = None):
        self.url, self.directory = f"http://127.0.0.1:{port}", directory
        env = {**os.environ, "RECALL_INDEX_ROOT": str(index_root), "RECALL_DATA_DIR": str(directory),
               "RECALL_WEBHOOK_SECRET": SECRET, "RECALL_MAX_STREAM_LAG": "10000000"}
        env.pop("REDIS_URL", None)
        self.log = (directory / "serve.log").open("wb")  # the child writes it until stop()
        extra = [] if workers is None else ["--workers", str(workers)]
        self.process = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port), *extra],
                                        env=env, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 300
        while True:
            try:
                if httpx.get(f"{self.url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the service did not start; see {directory / 'serve.log'}")
            time.sleep(0.2)
        self.redis = redis.Redis(unix_socket_path=str(directory / "redis" / "redis.sock"))
        self.keys = Keys("nr", 8)

    def counter(self, name: str) -> float:
        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return 0.0

    def wait_drained(self, timeout_s: float = 600) -> float:
        started = time.perf_counter()
        while stream_backlog(self.redis, self.keys) > 0:
            if time.perf_counter() - started > timeout_s:
                raise RuntimeError("the worker did not drain the streams in time")
            time.sleep(0.02)
        return time.perf_counter() - started

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)
        self.log.close()


def signed_post(client: httpx.Client, events: list[dict]) -> None:
    body = orjson.dumps({"events": events})
    response = client.post("/v1/events", content=body, headers=signed_headers(SECRET, body))
    response.raise_for_status()


def seed_users(service: Service, n_items: int, rng: np.random.Generator) -> dict:
    """N_USERS histories posted at once: the worker's re-encoding throughput on a burst."""
    now = int(time.time())
    events = [{"user_id": f"user-{u}", "item_id": int(rng.integers(1, n_items + 1)), "timestamp": now - 3600 * 24
               + 600 * n, "context": CONTEXTS[(u + n // 8) % len(CONTEXTS)], "event_id": f"seed-{u}-{n}"}
              for n in range(EVENTS_PER_USER) for u in range(N_USERS)]
    encoded_before = service.counter("worker_users_encoded_total")
    started = time.perf_counter()
    with httpx.Client(base_url=service.url, timeout=60) as client:
        for start in range(0, len(events), 1000):
            signed_post(client, events[start:start + 1000])
    seconds = time.perf_counter() - started + service.wait_drained()
    encoded = service.counter("worker_users_encoded_total") - encoded_before
    return {"events": len(events), "seconds": seconds, "events_per_s": len(events) / seconds,
            "users_encoded_per_s": encoded / seconds}


def context_user_events(n_items: int, rng: np.random.Generator) -> list[dict]:
    start = int(time.time()) - 86_400 * (CONTEXT_SESSIONS + 1)
    return [{"user_id": f"ctx-{u}", "item_id": int(rng.integers(1, n_items + 1)),
             "timestamp": start + 86_400 * session + 60 * click,
             "context": CONTEXTS[(7 * u + session) % len(CONTEXTS)], "event_id": f"ctx-{u}-{session}-{click}"}
            for session in range(CONTEXT_SESSIONS) for click in range(CLICKS_PER_SESSION)
            for u in range(N_CONTEXT_USERS)]


def seed_context_users(service: Service, n_items: int, rng: np.random.Generator) -> None:
    events = context_user_events(n_items, rng)
    with httpx.Client(base_url=service.url, timeout=60) as client:
        for start in range(0, len(events), 1000):
            signed_post(client, events[start:start + 1000])
    service.wait_drained()


def context_request(n: int) -> dict:
    """A context-user asked in a context other than their last (never precomputed): the next session's."""
    user = (n * 7919) % N_CONTEXT_USERS
    context = CONTEXTS[(7 * user + CONTEXT_SESSIONS + n % 50) % len(CONTEXTS)]
    return {"user_id": f"ctx-{user}", "k": K, "context": context}


def full_encode_request(n: int) -> dict:
    """The same request with one recent event: another history than the stored one, so it is encoded in full
    (the path every new-context request took before prefix states)."""
    return {**context_request(n), "recent_events": [{"item_id": 1 + n % 1000, "action": "click"}]}


def vector_sources(service: Service, make_request, n: int = 200) -> dict[str, int]:
    sources: dict[str, int] = {}
    with httpx.Client(base_url=service.url, timeout=30) as client:
        for i in range(n):
            source = client.post("/v1/recall", json=make_request(i)).json()["vector_source"]
            sources[source] = sources.get(source, 0) + 1
    return sources


def raw_search(index_root: Path, service: Service, n_queries: int = 2000) -> LoadResult:
    """The same search, in process, one thread, on the users' stored vectors: the floor under /recall."""
    faiss.omp_set_num_threads(1)
    loaded = open_version(index_root)
    pipe = service.redis.pipeline(transaction=False)
    for u in range(n_queries):
        pipe.hget(service.keys.user(f"user-{u % N_USERS}"), "vectors")
    queries = np.stack([np.frombuffer(raw, np.float32)[:loaded.index.d] for raw in pipe.execute()])
    result = LoadResult()
    started = time.perf_counter()
    for query in queries:
        began = time.perf_counter()
        loaded.index.search(query.reshape(1, -1), K)
        result.latencies_ms.append((time.perf_counter() - began) * 1000)
    result.seconds = time.perf_counter() - started
    return result


def recall_request(n: int) -> dict:
    return {"user_id": f"user-{(n * 7919) % N_USERS}", "k": K}


async def offer_events(service: Service, rate: int, seconds: float, n_items: int, tag: str) -> dict[str, float]:
    """`rate` events/s in batches every 50 ms; each batch carries one probe event of a new user. Returns each
    probe user's send time (ms)."""
    rng, sent, batch_size = np.random.default_rng(rate), {}, max(rate // 20, 1)
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
        start = time.perf_counter()
        for n in range(int(seconds * 20)):
            delay = start + n / 20 - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            probe = f"probe-{tag}-{n}"
            events = [{"user_id": probe, "item_id": int(rng.integers(1, n_items + 1))}] + [
                {"user_id": f"user-{int(rng.integers(N_USERS))}", "item_id": int(rng.integers(1, n_items + 1))}
                for _ in range(batch_size - 1)]
            body = orjson.dumps({"events": events})
            sent[probe] = time.time() * 1000
            response = await client.post("/v1/events", content=body, headers=signed_headers(SECRET, body))
            response.raise_for_status()
        elapsed = time.perf_counter() - start
    return {"sent": sent, "events_per_s": int(seconds * 20) * batch_size / elapsed}


def freshness(service: Service, rate: int, seconds: float, n_items: int, tag: str) -> dict:
    offered = asyncio.run(offer_events(service, rate, seconds, n_items, tag))
    service.wait_drained()
    pipe = service.redis.pipeline(transaction=False)
    for probe in offered["sent"]:
        pipe.hget(service.keys.user(probe), "updated_ms")
    written = pipe.execute()
    delays = [int(updated) - sent for updated, sent in zip(written, offered["sent"].values(), strict=True)
              if updated is not None]
    return {"rate": rate, "events_per_s": offered["events_per_s"], "probes": len(offered["sent"]),
            "lost": sum(updated is None for updated in written),
            "p50_ms": float(np.percentile(delays, 50)), "p99_ms": float(np.percentile(delays, 99))}


def bench_size(n_items: int, seconds: float, console, workers: int | None) -> dict:
    with console.status(f"catalogue of {n_items:,} items (export + index, cached)"):
        _, index_root = build_catalogue(n_items)
    with tempfile.TemporaryDirectory() as directory:
        with console.status("starting `recall serve`"):
            service = Service(index_root, Path(directory), workers=workers)
        try:
            with console.status(f"seeding {N_USERS} users x {EVENTS_PER_USER} events"):
                seeded = seed_users(service, n_items, np.random.default_rng(1))
            with console.status(f"seeding {N_CONTEXT_USERS} users with {CONTEXT_SESSIONS} sessions each"):
                seed_context_users(service, n_items, np.random.default_rng(2))
            raw = raw_search(index_root, service)
            asyncio.run(closed_loop(service.url, recall_request, 8, 3.0))  # warm-up, not measured
            with console.status(f"/v1/recall at {OFFERED_RPS} requests/s for {seconds:.0f} s"):
                offered = asyncio.run(open_loop(service.url, recall_request, OFFERED_RPS, seconds))
            with console.status(f"/v1/recall saturation, {CONCURRENCY} clients"):
                saturated = asyncio.run(closed_loop(service.url, recall_request, CONCURRENCY, seconds))
            sources = {"context": vector_sources(service, context_request),
                       "full": vector_sources(service, full_encode_request)}
            asyncio.run(closed_loop(service.url, context_request, 8, 3.0))
            with console.status(f"new contexts at {OFFERED_RPS} requests/s for {seconds:.0f} s"):
                context = asyncio.run(open_loop(service.url, context_request, OFFERED_RPS, seconds))
            with console.status("new contexts, saturation"):
                context_saturated = asyncio.run(closed_loop(service.url, context_request, CONCURRENCY, seconds))
            with console.status(f"new contexts encoded in full at {OFFERED_RPS} requests/s for {seconds:.0f} s"):
                full = asyncio.run(open_loop(service.url, full_encode_request, OFFERED_RPS, seconds))
            with console.status("new contexts encoded in full, saturation"):
                full_saturated = asyncio.run(closed_loop(service.url, full_encode_request, CONCURRENCY, seconds))
            prefix_bytes = service.redis.memory_usage(service.keys.prefix_state("ctx-0"))
            fresh = []
            for rate in FRESHNESS_RATES:
                with console.status(f"freshness at {rate} events/s for {seconds:.0f} s"):
                    fresh.append(freshness(service, rate, seconds, n_items, f"{n_items}-{rate}"))
        finally:
            service.stop()
    lateness_ms = offered.lateness_ms + context.lateness_ms + full.lateness_ms
    return {"items": n_items, "api_processes": Settings().api_processes(workers), "seed": seeded,
            "raw_search_p50_ms": raw.percentile(50), "raw_search_p99_ms": raw.percentile(99),
            "recall_p50_ms": offered.percentile(50), "recall_p99_ms": offered.percentile(99),
            "offered_rps": OFFERED_RPS, "achieved_rps": offered.rps,
            "errors": offered.errors + saturated.errors, "max_rps": saturated.rps,
            "saturated_p99_ms": saturated.percentile(99), "freshness": fresh,
            "context_p50_ms": context.percentile(50), "context_p99_ms": context.percentile(99),
            "context_achieved_rps": context.rps, "context_max_rps": context_saturated.rps,
            "context_errors": context.errors + context_saturated.errors, "context_sources": sources["context"],
            "full_encode_p50_ms": full.percentile(50), "full_encode_p99_ms": full.percentile(99),
            "full_encode_achieved_rps": full.rps, "full_encode_max_rps": full_saturated.rps,
            "full_encode_errors": full.errors + full_saturated.errors, "full_encode_sources": sources["full"],
            "prefix_state_redis_bytes": prefix_bytes,
            # how late the generator sent (counted in every open-loop latency above): a check on the generator
            "generator_lateness_p50_ms": float(np.percentile(lateness_ms, 50)),
            "generator_lateness_p99_ms": float(np.percentile(lateness_ms, 99)),
            "latencies_ms": {"recall": offered.latencies_ms, "raw": raw.latencies_ms,
                             "context": context.latencies_ms, "full": full.latencies_ms}}


def print_table(console, results: list[dict]) -> None:
    table = Table(title=f"/v1/recall on loopback, {results[0]['api_processes']} API process(es), embedded Redis + "
                        "worker (ms)")
    for column in ("items", "raw p50", "raw p99", f"recall p50 @{OFFERED_RPS}/s", f"recall p99 @{OFFERED_RPS}/s",
                   "overhead p50", "max req/s", "errors", "generator late p50/p99"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(f"{r['items']:,}", f"{r['raw_search_p50_ms']:.2f}", f"{r['raw_search_p99_ms']:.2f}",
                      f"{r['recall_p50_ms']:.2f}", f"{r['recall_p99_ms']:.2f}",
                      f"{r['recall_p50_ms'] - r['raw_search_p50_ms']:.2f}", f"{r['max_rps']:.0f}", str(r["errors"]),
                      f"{r['generator_lateness_p50_ms']:.2f} / {r['generator_lateness_p99_ms']:.2f}")
    console.print(table)
    table = Table(title=f"Every request in a context not precomputed, {CONTEXT_SESSIONS * (CLICKS_PER_SESSION + 1)}"
                        "-token histories (ms)")
    for column in ("items", "path", "vector sources", f"p50 @{OFFERED_RPS}/s", f"p99 @{OFFERED_RPS}/s",
                   "achieved req/s", "max req/s", "errors"):
        table.add_column(column, justify="right")
    for r in results:
        for label, key in (("query step (prefix state)", "context"), ("full encode (baseline)", "full_encode")):
            table.add_row(f"{r['items']:,}", label, str(r[f"{key}_sources"]), f"{r[f'{key}_p50_ms']:.2f}",
                          f"{r[f'{key}_p99_ms']:.2f}", f"{r[f'{key}_achieved_rps']:.0f}", f"{r[f'{key}_max_rps']:.0f}",
                          str(r[f"{key}_errors"]))
    console.print(table)
    table = Table(title="Freshness: webhook request sent -> user vector written (ms); worker burst throughput")
    for column in ("items", "offered events/s", "achieved", "p50", "p99", "lost", "burst users/s"):
        table.add_column(column, justify="right")
    for r in results:
        for f in r["freshness"]:
            table.add_row(f"{r['items']:,}", str(f["rate"]), f"{f['events_per_s']:.0f}", f"{f['p50_ms']:.0f}",
                          f"{f['p99_ms']:.0f}", str(f["lost"]), f"{r['seed']['users_encoded_per_s']:.0f}")
    console.print(table)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for axis, r in zip(axes[0], results, strict=True):
        for label, values in (("raw FAISS search", r["latencies_ms"]["raw"]),
                              (f"/v1/recall @{OFFERED_RPS} req/s, precomputed", r["latencies_ms"]["recall"]),
                              (f"new context @{OFFERED_RPS} req/s, query step", r["latencies_ms"]["context"]),
                              (f"new context @{OFFERED_RPS} req/s, full encode", r["latencies_ms"]["full"])):
            if values:
                ordered = np.sort(values)
                axis.plot(ordered, np.linspace(0, 1, len(ordered)), label=label)
        axis.set(xscale="log", xlabel="latency (ms)", ylabel="share of requests", title=f"{r['items']:,} items")
        axis.grid(alpha=0.3)
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each load window")
    parser.add_argument("--quick", action="store_true", help="1M items, 10-second windows")
    parser.add_argument("--json", type=Path, help="also write the headline figures of the largest catalogue here")
    parser.add_argument("--workers", type=int, help="`recall serve --workers` (default: the service's own, one API "
                                                    "process per CPU)")
    args = parser.parse_args()
    sizes, seconds = ([1_000_000], 10.0) if args.quick else ([int(s) for s in args.sizes.split(",")], args.seconds)
    console = make_console()
    results = [bench_size(n, seconds, console, args.workers) for n in sizes]
    print_table(console, results)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "service.json").write_text(json.dumps(results))
    plot(results, RESULTS / "service.png")
    largest, at_1000 = results[-1], results[-1]["freshness"][-1]
    headline = {key: largest[key] for key in (
        "items", "api_processes", "recall_p50_ms", "recall_p99_ms", "offered_rps", "max_rps", "raw_search_p50_ms",
        "raw_search_p99_ms", "errors", "context_p50_ms", "context_p99_ms", "context_max_rps", "context_errors",
        "full_encode_p50_ms", "full_encode_p99_ms", "full_encode_max_rps", "prefix_state_redis_bytes")}
    headline |= {"freshness_p50_ms": at_1000["p50_ms"], "freshness_p99_ms": at_1000["p99_ms"],
                 "events_per_s": at_1000["events_per_s"], "events_lost": at_1000["lost"],
                 "worker_users_per_s": largest["seed"]["users_encoded_per_s"]}
    if args.json:
        args.json.write_text(json.dumps(headline, indent=2))
    console.print(headline)


if __name__ == "__main__":
    main()
