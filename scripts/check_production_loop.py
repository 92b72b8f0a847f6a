"""The production loop checked from outside, as an operator runs it: only `recall` commands and HTTP.

    .venv/bin/python scripts/check_production_loop.py [--keep DIR]

1. publish a model, serve it with RECALL_ARCHIVE_DIR set, send new events (and a redelivered batch) through the
   webhook, and find exactly the accepted events in the archive;
2. warm-start on the archive, publish with --gate-events pointing at it, and see the service swap to it;
3. publish a model trained on shuffled items through the gate, and see it refused (exit 3, CURRENT unchanged);
4. delete the first run's directory, `recall rollback --to` the first version, and see the service serve it.

Prints one line per check and exits 1 when any fails. About five minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd

from service.ingest import signed_headers
from service.server_thread import free_port

SECRET = "check-secret"
SMALL_MODEL = """
[model]
dim = 32
n_heads = 2
max_len = 96
[train]
batch_size = 32
lr = 3e-3
"""


def recall(*args: str, env: dict | None = None, expect: int = 0) -> str:
    done = subprocess.run([sys.executable, "-m", "cli.main", *args], env=env, capture_output=True, text=True)
    if done.returncode != expect:
        raise SystemExit(f"`recall {' '.join(args)}` exited {done.returncode}, not {expect}:\n{done.stderr[-2000:]}")
    return done.stdout + done.stderr


def train(work: Path, events: Path, items: Path, out: Path, *extra: str) -> Path:
    recall("train", "--events", str(events), "--items", str(items), "--out", str(out), "--config",
           str(work / "small.toml"), "--epochs", "4", "--seed", "0", *extra)
    return out


def current(index: Path) -> str:
    return (index / "CURRENT").read_text().strip()


def wait_for(condition, what: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def new_events(world: Path, users: int, sessions: int, per_session: int) -> list[dict]:
    """The last hours of known users on known items: each user's sessions an hour apart, the last one now."""
    known = pd.read_parquet(world / "events.parquet")
    rng = np.random.default_rng(1)
    user_ids, items, now = known.user_id.unique()[:users], known.item_id.unique(), int(time.time()) - 60
    return [{"user_id": int(user), "item_id": int(rng.choice(items)),
             "timestamp": now - 3600 * (sessions - 1 - session) + event, "action": "click",
             "event_id": f"check-{user}-{session}-{event}"}
            for session in range(sessions) for user in user_ids for event in range(per_session)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temporary directory)")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="production-loop-"))
    work.mkdir(parents=True, exist_ok=True)
    (work / "small.toml").write_text(SMALL_MODEL)
    world, index, archive = work / "world", work / "index", work / "archive"
    results: list[tuple[str, bool, str]] = []

    recall("data", "synth", "--out", str(world), "--users", "400", "--items", "200", "--seed", "0")
    first_run = train(work, world / "events.parquet", world / "items.parquet", work / "runs" / "first")
    recall("publish", "--run", str(first_run), "--index", str(index))
    first = current(index)

    port = free_port()
    env = {**os.environ, "RECALL_INDEX_ROOT": str(index), "RECALL_DATA_DIR": str(work / "var"),
           "RECALL_WEBHOOK_SECRET": SECRET, "RECALL_ARCHIVE_DIR": str(archive), "RECALL_ARCHIVE_FLUSH_S": "1",
           "RECALL_INDEX_POLL_S": "0.5"}
    server = subprocess.Popen([sys.executable, "-m", "cli.main", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            wait_for(lambda: _ready(client), "the service to be ready")

            # 1. Accepted events reach the archive exactly once; a redelivered batch adds nothing.
            events, accepted = new_events(world, users=150, sessions=3, per_session=4), 0
            for start in range(0, len(events), 50):
                body = orjson.dumps({"events": events[start:start + 50]})
                accepted += client.post("/v1/events", content=body, headers=signed_headers(SECRET, body)).json()[
                    "accepted"]
            body = orjson.dumps({"events": events[:50]})
            redelivered = client.post("/v1/events", content=body, headers=signed_headers(SECRET, body)).json()
            archived = wait_for(lambda: _archived_ids(archive, len(events)), "the archive", timeout_s=30)
            exact = accepted == len(events) and redelivered["accepted"] == 0 and \
                sorted(archived) == sorted(e["event_id"] for e in events)
            results.append(("webhook -> archive: exactly the accepted events, once", exact,
                            f"{accepted} accepted, {redelivered['duplicates']} redelivered refused, "
                            f"{len(archived)} archived in {len(list(archive.rglob('*.parquet')))} files"))

            # 2. Warm-start on the archive, publish through the gate on it, and the service swaps.
            second_run = train(work, archive, world / "items.parquet", work / "runs" / "second", "--init-from",
                               str(first_run))
            gate_line = last_line_with("NDCG", recall("publish", "--run", str(second_run), "--index", str(index),
                                                      "--gate-events", str(archive)))
            second = current(index)
            swapped = wait_for(lambda: _serving(client) == second, "the swap", timeout_s=30)
            results.append(("warm start on the archive, gated publish, service swaps", bool(swapped)
                            and second != first, gate_line[:160]))

            # 3. A model of shuffled items is refused by the gate, and nothing changes.
            shuffled = work / "shuffled"
            shuffled.mkdir(exist_ok=True)
            log = pd.read_parquet(world / "events.parquet")
            ids = np.sort(log.item_id.unique())
            permuted = dict(zip(ids, np.random.default_rng(0).permutation(ids), strict=True))
            log.assign(item_id=log.item_id.map(permuted)).to_parquet(shuffled / "events.parquet", index=False)
            bad_run = train(work, shuffled / "events.parquet", world / "items.parquet", work / "runs" / "shuffled")
            versions_before = sorted(p.name for p in (index / "versions").iterdir())
            refusal = last_line_with("NDCG", recall("publish", "--run", str(bad_run), "--index", str(index),
                                                    "--gate-events", str(archive), expect=3))
            unchanged = current(index) == second and sorted(p.name for p in (index / "versions").iterdir()) == \
                versions_before and _serving(client) == second
            results.append(("shuffled-item model refused by the gate (exit 3)", unchanged, refusal[:160]))

            # 4. Roll back to the first version with its run directory gone.
            shutil.rmtree(first_run)
            recall("rollback", "--index", str(index), "--to", first)
            rolled = wait_for(lambda: _serving(client) == first, "the rollback", timeout_s=30)
            answer = client.post("/v1/recall", json={"user_id": int(events[0]["user_id"]), "k": 10}).json()
            results.append(("rollback --to the first version, its run deleted, serves it", bool(rolled)
                            and len(answer["items"]) == 10, f"serving {answer['index_version']}"))
    finally:
        server.terminate()
        server.wait(timeout=30)
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    for name, passed, detail in results:
        print(f"{'PASS' if passed else 'FAIL'}  {name}: {detail}")  # noqa: T201
    return 0 if all(passed for _, passed, _ in results) and len(results) == 4 else 1


def last_line_with(text: str, output: str) -> str:
    return next((line.strip() for line in reversed(output.splitlines()) if text in line), "")


def _ready(client: httpx.Client) -> bool:
    try:
        return client.get("/readyz").status_code == 200
    except httpx.TransportError:
        return False


def _serving(client: httpx.Client) -> str:
    return client.post("/v1/recall", json={"user_id": 0, "k": 1}).json()["index_version"]


def _archived_ids(archive: Path, expected: int) -> list[str] | None:
    files = [path for path in archive.rglob("*.parquet") if not path.name.startswith(".")]
    if not files:
        return None
    ids = pd.concat([pd.read_parquet(path, columns=["event_id"]) for path in files]).event_id.tolist()
    return ids if len(ids) >= expected else None


if __name__ == "__main__":
    sys.exit(main())
