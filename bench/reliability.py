"""Faults, load and bad input against the scaled-out service, and the figures that say whether anything was lost.

    python bench/reliability.py [--minutes 10] [--quick] [--json PATH]

The service runs as it would in production, each part in its own process: a redis-server with its append-only
file, `recall serve` with REDIS_URL set, and two `recall worker` processes. For `--minutes` (`--quick`: 1.5) a
load of signed event batches and /v1/recall requests runs while faults are injected on a schedule:
  - a worker SIGKILLed (twice, restarted each time),
  - Redis restarted under load,
  - a corrupt index version published, then a version built for another model (both must be refused),
  - a battery of bad requests (malformed, oversized, unsigned, stale, huge k, unicode and very long ids,
    negative or future timestamps, unknown actions).
Senders behave as the webhook's contract asks: a batch refused with 503 or 429 is sent again after Retry-After.
Afterwards every user's history in Redis is compared with what was accepted: events lost, events applied twice.

Prints a table, writes RELIABILITY.md, bench/results/reliability.json (or --json) and a plot of latency over
time with the faults marked, bench/results/reliability.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
import numpy as np
import orjson
import redis
from rich.table import Table

from bench.catalogue import CONTEXTS, build_catalogue
from cli.console import make_console
from index_builder.build import build_and_publish
from service.ingest import signed_headers
from service.models import MAX_ID_LENGTH
from service.redis_server import EmbeddedRedis
from service.server_thread import free_port
from service.store.keys import Keys
from service.store.streams import stream_backlog
from service.store.user_state import read_histories

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SECRET, API_KEY, PARTITIONS = "reliability-secret", "reliability-key", 8
N_ITEMS, OTHER_MODEL_ITEMS = 20_000, 2_000
ITEMS_PER_SESSION, SESSIONS_PER_USER = 8, 12  # 12 x (1 + 8) tokens: every event stays within max_len 200
EVENT_RATE, RECALL_RATE, SENDERS, BATCH = 300, 100, 4, 20
START = int(time.time()) - 60 * 86_400


@dataclass
class Tally:
    recall_statuses: dict[int, int] = field(default_factory=dict)
    event_statuses: dict[int, int] = field(default_factory=dict)
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, ms) of 200s
    fallbacks: dict[str, int] = field(default_factory=dict)
    accepted_events: list[dict] = field(default_factory=list)  # every event of a batch that got 202
    events_new: int = 0
    events_duplicate: int = 0
    faults: list[tuple[float, str]] = field(default_factory=list)
    bad_inputs: dict[int, int] = field(default_factory=dict)
    rss: list[tuple[float, float, float]] = field(default_factory=list)  # (seconds, API MB, steady worker MB)
    checks_failed: list[str] = field(default_factory=list)
    # Recalls that waited the whole timeout for one of the load generator's own connections: the offered rate
    # outran the API (a starved CPU), so they never reached it. Overload is measured, not a lost answer.
    recalls_not_sent: int = 0


def rss_mb(process: subprocess.Popen) -> float:
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Cluster:
    """redis-server, the API and two workers, each a process of its own."""

    def __init__(self, directory: Path, index_root: Path):
        self.directory, self.index_root = directory, index_root
        self.redis = EmbeddedRedis(directory / "redis", persistence=True).start()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "REDIS_URL": self.redis.url, "RECALL_INDEX_ROOT": str(index_root),
                    "RECALL_WEBHOOK_SECRET": SECRET, "RECALL_API_KEY": API_KEY,
                    "RECALL_STREAM_PARTITIONS": str(PARTITIONS), "RECALL_WORKER_LEASE_MS": "3000",
                    "RECALL_INDEX_POLL_S": "0.5", "RECALL_ENCODER_THREADS": "1"}
        # One API process: the soak follows its resident memory, and a parent of several holds none of the model.
        self.api = self._start("serve", "--port", str(self.port), "--workers", "1")
        self.workers = [self._start("worker", "--metrics-port", "0") for _ in range(2)]
        self.store = redis.Redis.from_url(self.redis.url)
        self.keys = Keys("nr", PARTITIONS)
        deadline = time.monotonic() + 300
        while not self.ready():
            if self.api.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the API did not start; see {directory / 'serve.log'}")
            time.sleep(0.2)

    def _start(self, *command: str) -> subprocess.Popen:
        log = (self.directory / f"{command[0]}.log").open("ab")
        return subprocess.Popen([sys.executable, "-m", "cli.main", *command], env=self.env,
                                stdout=subprocess.DEVNULL, stderr=log)

    def ready(self) -> dict | None:
        try:
            response = httpx.get(f"{self.url}/readyz", timeout=5)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def kill_worker(self, n: int) -> None:
        self.workers[n].send_signal(signal.SIGKILL)
        self.workers[n].wait()

    def restart_worker(self, n: int) -> None:
        self.workers[n] = self._start("worker", "--metrics-port", "0")

    def stop(self) -> None:
        for process in [self.api, *self.workers]:
            process.send_signal(signal.SIGTERM)
        for process in [self.api, *self.workers]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        self.redis.stop()


def user_events(user: str, rng: random.Random, n_items: int) -> list[dict]:
    """A user's sessions in order: distinct items within a session, each event with its own id."""
    events = []
    for session in range(SESSIONS_PER_USER):
        for n, item in enumerate(rng.sample(range(1, n_items + 1), ITEMS_PER_SESSION)):
            events.append({"user_id": user, "item_id": item, "session_id": f"{user}:{session}",
                           "timestamp": START + 86_400 * session + 60 * n, "event_id": f"{user}:{session}:{n}",
                           "context": CONTEXTS[zlib.crc32(user.encode()) % len(CONTEXTS)]})
    return events


async def send_events(url: str, queue: list[dict], rate: float, deadline: float, tally: Tally) -> None:
    """One sender: its users' events in order, batch after batch, each retried until it is accepted."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        position, started = 0, time.monotonic()
        while position < len(queue) and time.monotonic() < deadline:
            batch = queue[position:position + BATCH]
            body = orjson.dumps({"events": batch})
            try:
                response = await client.post("/v1/events", content=body, headers=signed_headers(SECRET, body))
                status = response.status_code
            except httpx.HTTPError:
                status, response = 0, None
            tally.event_statuses[status] = tally.event_statuses.get(status, 0) + 1
            if status == 202:
                result = response.json()
                tally.events_new += result["accepted"]
                tally.events_duplicate += result["duplicates"]
                tally.accepted_events += batch
                position += len(batch)
                await asyncio.sleep(max(started + position / rate - time.monotonic(), 0))
            elif status in (0, 429, 503):
                retry = float(response.headers.get("retry-after", "1")) if response is not None else 1.0
                await asyncio.sleep(min(retry, 1.0) / 4)
            else:
                tally.checks_failed.append(f"/v1/events answered {status} to a valid batch")
                position += len(batch)


async def ask_recalls(url: str, users: list[str], rate: float, deadline: float, began: float, tally: Tally) -> None:
    async with httpx.AsyncClient(base_url=url, timeout=30, headers={"X-API-Key": API_KEY}) as client:

        async def one(n: int) -> None:
            request = {"user_id": users[n % len(users)], "k": 50}
            if n % 3 == 0:
                request["context"] = CONTEXTS[n % len(CONTEXTS)]
            sent = time.perf_counter()
            try:
                response = await client.post("/v1/recall", json=request)
                status = response.status_code
            except httpx.PoolTimeout:
                tally.recalls_not_sent += 1
                return
            except httpx.HTTPError:
                status = 0
            tally.recall_statuses[status] = tally.recall_statuses.get(status, 0) + 1
            if status == 200:
                tally.latencies.append((time.monotonic() - began, (time.perf_counter() - sent) * 1000))
                fallback = response.json()["fallback"] or "none"
                tally.fallbacks[fallback] = tally.fallbacks.get(fallback, 0) + 1

        tasks, n, started = set(), 0, time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(max(started + n / rate - time.monotonic(), 0))
            task = asyncio.create_task(one(n))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            n += 1
        await asyncio.gather(*tasks)


def bad_requests() -> list[tuple[str, bytes, dict]]:
    """(path, body, headers) of requests every one of which must get a 4xx."""
    def signed(events) -> tuple[str, bytes, dict]:
        body = orjson.dumps({"events": events})
        return "/v1/events", body, signed_headers(SECRET, body)

    good = {"user_id": "bad-input", "item_id": 1}
    recall_headers = {"X-API-Key": API_KEY, "content-type": "application/json"}
    stale_body = orjson.dumps({"events": [good]})
    cases = [
        signed([{**good, "timestamp": -1}]), signed([{**good, "timestamp": time.time() + 30 * 86_400}]),
        signed([{**good, "action": "purchase"}]), signed([{**good, "user_id": "u" * (MAX_ID_LENGTH + 1)}]),
        signed([{**good, "item_id": None}]), signed([{"user_id": "x"}]), signed([]), signed([{**good, "extra": 1}]),
        signed([good] * 5000),  # more events than a batch may hold
        ("/v1/events", b"x" * 2_000_000, signed_headers(SECRET, b"x" * 2_000_000)),  # over the body limit
        ("/v1/events", stale_body, signed_headers(SECRET, stale_body, timestamp=int(time.time()) - 3600)),
        ("/v1/events", stale_body, {**signed_headers(SECRET, stale_body), "X-Recall-Signature": "sha256=00"}),
        ("/v1/events", stale_body, {"content-type": "application/json"}),
        ("/v1/events", b"{not json", signed_headers(SECRET, b"{not json")),
        ("/v1/recall", orjson.dumps({"user_id": 1, "k": 10**9}), recall_headers),
        ("/v1/recall", orjson.dumps({"user_id": "ü" * 300}), recall_headers),
        ("/v1/recall", orjson.dumps({"user_id": 1, "exclude_item_ids": list(range(5000))}), recall_headers),
        ("/v1/recall", orjson.dumps({"user_id": 1}), {"content-type": "application/json"}),  # no API key
        ("/v1/recall", orjson.dumps({"user_id": 1}), {**recall_headers, "X-API-Key": "wrong"}),
        ("/v1/recall", b"[]", recall_headers), ("/v1/recall", b"\xff\xfe", recall_headers),
        ("/v1/recall", orjson.dumps({"user_id": 1.5}), recall_headers),
    ]
    # Outside standard JSON: numbers Python parses but JSON has not (in every field of every route), a duplicate
    # key, a byte-order mark, a body not sent as JSON.
    valid = {"/v1/recall": b'{"user_id": 1, "k": 5, "context": "x", "filter_viewed": true}',
             "/v1/recall/batch": b'{"requests": [{"user_id": 1, "k": 5, "context": "x"}]}',
             "/v1/events": b'{"events": [{"user_id": 1, "item_id": 2, "timestamp": 1764000000, "session_id": 3}]}'}
    for path, body in valid.items():
        def headers(content: bytes, path=path) -> dict:
            return signed_headers(SECRET, content) if path == "/v1/events" else recall_headers
        for value in re.findall(rb'(?<=": )[^,}\]\[{]+', body):
            for raw in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
                broken = body.replace(b": " + value, b": " + raw, 1)
                cases.append((path, broken, headers(broken)))
        first_key = re.match(rb'\{("\w+"): ', body).group(1)
        for broken in (b"{" + first_key + b": 0, " + body[1:], b"\xef\xbb\xbf" + body):
            cases.append((path, broken, headers(broken)))
        for content_type in ("text/plain", "application/x-www-form-urlencoded"):
            cases.append((path, body, {**headers(body), "content-type": content_type}))
    rng = random.Random(7)
    for _ in range(200):  # random junk: bytes, wrong types, deep nesting
        junk = rng.choice([bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 64))),
                           json.dumps({"user_id": rng.choice([None, [], {}, True, "", 10**40]),
                                       "k": rng.choice([-1, 0, "ten", 1.5, None])}).encode(),
                           b"[" * 5000 + b"]" * 5000])
        path = rng.choice(["/v1/recall", "/v1/events"])
        headers = signed_headers(SECRET, junk) if path == "/v1/events" else recall_headers
        cases.append((path, junk, headers))
    return cases


def try_bad_inputs(url: str, tally: Tally) -> None:
    with httpx.Client(base_url=url, timeout=30) as client:
        for path, body, headers in bad_requests():
            try:
                status = client.post(path, content=body, headers=headers).status_code
            except httpx.HTTPError:
                status = 0  # no answer at all: counted as a failure
            tally.bad_inputs[status] = tally.bad_inputs.get(status, 0) + 1


def mixed_version(root: Path, live: str, other_artifacts: Path, name: str) -> Path:
    """A version under `root` holding another model's index beside the live version's encoder, with checksums
    that match: only the check that index and encoder come from one model can refuse it."""
    from contract.file_io import sha256_file
    from index_builder.versions import INDEX_FILES, version_files

    staging = root.parent / f"staging-{name}"
    report = build_and_publish(other_artifacts, staging)
    mixed = root / "versions" / name
    shutil.copytree(staging / "versions" / report.version, mixed)
    shutil.rmtree(staging)
    live_manifest = json.loads((root / "versions" / live / "manifest.json").read_text())
    manifest = json.loads((mixed / "manifest.json").read_text())
    for file_name in version_files(live_manifest["model"])[len(INDEX_FILES):]:
        shutil.copyfile(root / "versions" / live / file_name, mixed / file_name)
        manifest["checksums"][file_name] = sha256_file(mixed / file_name)
    (mixed / "manifest.json").write_text(json.dumps({**manifest, "model": live_manifest["model"]}))
    return mixed


def publish_bad_index(cluster: Cluster, kind: str, other_artifacts: Path, tally: Tally) -> None:
    """Point CURRENT at a corrupt version, or at a version mixing another model's index with the live encoder;
    check it is refused while the live pair keeps answering; then point CURRENT back."""
    root, live = cluster.index_root, (cluster.index_root / "CURRENT").read_text()
    bad = root / "versions" / f"bad-{kind}"
    if kind == "corrupt":
        shutil.copytree(root / "versions" / live, bad)
        data = bytearray((bad / "index.faiss").read_bytes())
        data[len(data) // 2] ^= 0xFF
        (bad / "index.faiss").write_bytes(bytes(data))
    else:
        mixed_version(root, live, other_artifacts, bad.name)
    (root / "CURRENT").write_text(bad.name)
    deadline = time.monotonic() + 20
    while not ((state := cluster.ready()) and (state.get("refused_index") or "").startswith(bad.name)):
        if time.monotonic() > deadline:
            tally.checks_failed.append(f"the {kind} index was not reported as refused")
            break
        time.sleep(0.2)
    if state and state["index_version"] != live:
        tally.checks_failed.append(f"the {kind} index was loaded")
    (root / "CURRENT").write_text(live)
    shutil.rmtree(bad)


async def sample_rss(cluster: Cluster, deadline: float, began: float, tally: Tally) -> None:
    """The API's and the never-killed worker's resident memory every 2 s: growth after warm-up is a leak."""
    while time.monotonic() < deadline:
        tally.rss.append((time.monotonic() - began, rss_mb(cluster.api), rss_mb(cluster.workers[1])))
        await asyncio.sleep(2)


async def inject_faults(cluster: Cluster, seconds: float, other_artifacts: Path, began: float,
                        tally: Tally) -> None:
    def mark(name: str) -> None:
        tally.faults.append((time.monotonic() - began, name))

    async def at(fraction: float) -> None:
        await asyncio.sleep(max(began + fraction * seconds - time.monotonic(), 0))

    async def kill_a_worker() -> None:  # its partitions move to the other one; it comes back 3 s later
        mark("worker SIGKILL")
        cluster.kill_worker(0)
        await asyncio.sleep(3)
        cluster.restart_worker(0)

    await at(0.15)
    await kill_a_worker()
    await at(0.30)
    mark("Redis restart")
    cluster.redis.stop()
    await asyncio.sleep(2)
    cluster.redis.start()
    await at(0.45)
    mark("corrupt index")
    await asyncio.to_thread(publish_bad_index, cluster, "corrupt", other_artifacts, tally)
    await at(0.60)
    mark("index of another model")
    await asyncio.to_thread(publish_bad_index, cluster, "mismatch", other_artifacts, tally)
    await at(0.75)
    await kill_a_worker()
    await at(0.85)
    mark("bad input battery")
    await asyncio.to_thread(try_bad_inputs, cluster.url, tally)


def audit(cluster: Cluster, tally: Tally) -> tuple[int, int]:
    """(events lost, events applied twice): each user's stored sessions against the events accepted for them.

    A session keeps an item once (its strongest action), so an event applied again while its session is still the
    user's newest leaves the history unchanged and cannot be counted: what is counted are the re-applications that
    changed a history (an older session's event landing again), the ones that would corrupt a user's vector."""
    expected: dict[str, dict[str, list[str]]] = {}
    for event in tally.accepted_events:
        expected.setdefault(event["user_id"], {}).setdefault(event["session_id"], []).append(str(event["item_id"]))
    users = list(expected)
    lost = twice = 0
    for start in range(0, len(users), 500):
        chunk = users[start:start + 500]
        for user, state in zip(chunk, read_histories(cluster.store, cluster.keys, chunk), strict=True):
            stored: dict[str, list[str]] = {}
            for session in state.history["sessions"]:
                stored.setdefault(session["id"], []).extend(item for item, _ in session["items"])
            for session_id, items in expected[user].items():
                found = stored.get(session_id, [])
                lost += len(set(items) - set(found))
                twice += len(found) - len(set(found))
            twice += sum(len(found) for session_id, found in stored.items() if session_id not in expected[user])
    return lost, twice


def run(seconds: float, console, n_items: int = N_ITEMS) -> tuple[dict, Tally]:
    """The soak with its faults; the figures, and the tally they come from."""
    _, live_index = build_catalogue(n_items)
    other_artifacts, _ = build_catalogue(OTHER_MODEL_ITEMS)
    directory = Path(tempfile.mkdtemp(prefix="reliability-"))
    index_root = directory / "index"
    shutil.copytree(live_index, index_root)
    console.print(f"starting redis-server, `recall serve` and 2 `recall worker` under {directory}")
    cluster = Cluster(directory, index_root)
    rng = random.Random(0)
    n_users = max(int(EVENT_RATE * seconds / (SESSIONS_PER_USER * ITEMS_PER_SESSION)) + 1, SENDERS)
    users = [f"user-{n}" for n in range(n_users)]
    queues: list[list[dict]] = [[] for _ in range(SENDERS)]
    for user in users:
        queues[zlib.crc32(user.encode()) % SENDERS].extend(user_events(user, rng, n_items))
    for queue in queues:  # interleave users within each sender while keeping each user's order
        queue.sort(key=lambda event: (int(event["session_id"].rsplit(":", 1)[1]), event["timestamp"]))
    tally = Tally()
    try:
        async def soak() -> None:
            began = time.monotonic()
            deadline = began + seconds
            await asyncio.gather(
                *(send_events(cluster.url, queue, EVENT_RATE / SENDERS, deadline, tally) for queue in queues),
                ask_recalls(cluster.url, users, RECALL_RATE, deadline, began, tally),
                sample_rss(cluster, deadline, began, tally),
                inject_faults(cluster, seconds, other_artifacts, began, tally))

        console.print(f"soak: {seconds:.0f} s, {EVENT_RATE} events/s and {RECALL_RATE} recalls/s offered, "
                      f"faults on schedule")
        asyncio.run(soak())
        deadline = time.monotonic() + 300
        while stream_backlog(cluster.store, cluster.keys) > 0:
            if time.monotonic() > deadline:
                tally.checks_failed.append("the workers did not drain the streams within 5 minutes")
                break
            time.sleep(0.2)
        lost, twice = audit(cluster, tally)
    finally:
        cluster.stop()
    latencies = np.array([ms for _, ms in tally.latencies]) if tally.latencies else np.array([np.nan])
    recalls = sum(tally.recall_statuses.values())
    five_xx = sum(count for status, count in [*tally.recall_statuses.items(), *tally.event_statuses.items()]
                  if status >= 500)
    result = {
        "seconds": seconds, "events_ingested": tally.events_new, "events_resent_as_duplicates": tally.events_duplicate,
        "events_lost": lost, "events_applied_twice": twice, "faults_injected": len(tally.faults),
        "faults": [name for _, name in tally.faults],
        "requests_served": tally.recall_statuses.get(200, 0) + tally.event_statuses.get(202, 0),
        "recall_requests": recalls, "recall_statuses": tally.recall_statuses,
        "event_batch_statuses": tally.event_statuses, "responses_5xx": five_xx,
        "responses_500": sum(count for status, count in [*tally.recall_statuses.items(),
                                                          *tally.event_statuses.items()] if status == 500),
        "requests_unanswered": tally.recall_statuses.get(0, 0) + tally.event_statuses.get(0, 0),
        "recalls_not_sent": tally.recalls_not_sent,
        "recall_error_rate": 1 - tally.recall_statuses.get(200, 0) / max(recalls, 1),
        "recall_p50_ms": float(np.percentile(latencies, 50)), "recall_p99_ms": float(np.percentile(latencies, 99)),
        "fallbacks": tally.fallbacks, "bad_inputs_tried": sum(tally.bad_inputs.values()),
        "bad_input_statuses": tally.bad_inputs,
        "bad_inputs_not_4xx": sum(count for status, count in tally.bad_inputs.items() if not 400 <= status < 500),
        "rss_mb": rss_growth(tally.rss), "checks_failed": tally.checks_failed,
    }
    return result, tally


def rss_growth(samples: list[tuple[float, float, float]]) -> dict:
    """Resident memory at the start, after warm-up (a fifth of the soak: buffers and arenas sized, partitions
    settled) and at the end, for the API and the never-killed worker."""
    if not samples:
        return {}
    warm = samples[len(samples) // 5]
    return {"api": {"start": samples[0][1], "warm": warm[1], "end": samples[-1][1]},
            "worker": {"start": samples[0][2], "warm": warm[2], "end": samples[-1][2]}}


def plot(tally: Tally, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not tally.latencies:
        return
    seconds = np.array([t for t, _ in tally.latencies])
    latencies = np.array([ms for _, ms in tally.latencies])
    buckets = np.floor(seconds).astype(int)
    ticks = np.unique(buckets)
    p99 = [np.percentile(latencies[buckets == t], 99) for t in ticks]
    figure, (axis, memory) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    axis.plot(ticks, p99, label="/v1/recall p99 per second")
    for when, name in tally.faults:
        for panel in (axis, memory):
            panel.axvline(when, color="red", alpha=0.5, linestyle="--")
        axis.text(when, max(p99), name, rotation=90, va="top", fontsize=8)
    axis.set(ylabel="ms", yscale="log", title="Latency and memory under injected faults")
    axis.legend()
    if tally.rss:
        when = [t for t, _, _ in tally.rss]
        memory.plot(when, [api for _, api, _ in tally.rss], label="API RSS")
        memory.plot(when, [worker for _, _, worker in tally.rss], label="never-killed worker RSS")
        memory.legend()
    memory.set(xlabel="seconds into the soak", ylabel="MB")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def report(result: dict, command: str) -> str:
    rows = [("events ingested", result["events_ingested"]), ("events lost", result["events_lost"]),
            ("events applied twice", result["events_applied_twice"]),
            ("faults injected", f"{result['faults_injected']} ({', '.join(result['faults'])})"),
            ("requests served", result["requests_served"]),
            ("responses 5xx (all 503 with Retry-After or a declared state)", result["responses_5xx"]),
            ("responses 500", result["responses_500"]),
            ("requests unanswered (connection errors, timeouts)", result["requests_unanswered"]),
            ("recalls not sent (the load generator's connections all busy: overload)", result["recalls_not_sent"]),
            ("/v1/recall p50 / p99 ms", f"{result['recall_p50_ms']:.1f} / {result['recall_p99_ms']:.1f}"),
            ("/v1/recall error rate", f"{result['recall_error_rate']:.2%}"),
            ("/v1/recall fallbacks", ", ".join(f"{k}: {v}" for k, v in sorted(result["fallbacks"].items()))),
            ("bad inputs tried / answered other than 4xx", f"{result['bad_inputs_tried']} / "
                                                           f"{result['bad_inputs_not_4xx']}"),
            *((f"RSS MB of the {name}: start / after warm-up / end",
               " / ".join(f"{result['rss_mb'][key][moment]:.0f}" for moment in ("start", "warm", "end")))
              for key, name in (("api", "API"), ("worker", "never-killed worker"))),
            ("checks failed", "; ".join(result["checks_failed"]) or "none")]
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return f"| figure | value |\n|---|---:|\n{table}\n\n`{command}`, a {result['seconds']:.0f}-second soak."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="a 90-second soak")
    parser.add_argument("--json", type=Path, default=RESULTS / "reliability.json")
    parser.add_argument("--markdown", type=Path, default=ROOT / "RELIABILITY.md")
    args = parser.parse_args()
    console = make_console()
    seconds = 90.0 if args.quick else args.minutes * 60
    result, tally = run(seconds, console)
    plot(tally, RESULTS / "reliability.png")
    table = Table(title="Reliability under faults")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in result.items():
        if not isinstance(value, dict | list):
            table.add_row(name, f"{value:.4g}" if isinstance(value, float) else str(value))
    console.print(table)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    command = "python bench/reliability.py" + (" --quick" if args.quick else f" --minutes {args.minutes:g}")
    update_markdown(args.markdown, report(result, command))
    if failures(result):
        console.print(f"[red]reliability checks failed: {', '.join(failures(result))}[/]")
        sys.exit(1)


def failures(result: dict) -> list[str]:
    """What went wrong in a soak; empty when nothing did."""
    return [*(f"{name}: {result[name]}" for name in ("events_lost", "events_applied_twice", "responses_500",
                                                     "bad_inputs_not_4xx", "requests_unanswered") if result[name]),
            *result["checks_failed"]]


def update_markdown(path: Path, table: str) -> None:
    """Replace the figures between the markers of RELIABILITY.md, keeping the prose around them."""
    begin, end = "<!-- figures:begin -->", "<!-- figures:end -->"
    text = path.read_text() if path.exists() else f"# Reliability\n\n{begin}\n{end}\n"
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    path.write_text(f"{head}{begin}\n{table}\n{end}{tail}")


if __name__ == "__main__":
    main()
