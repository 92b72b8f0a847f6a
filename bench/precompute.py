"""Quality cost of precomputing user vectors (the service's design) against full online encoding at request
time: both use the same history and context, and differ only in the time features of the query token.

    python bench/precompute.py [--data demo_data] [--users 300]

Needs a prepared demo directory (`recall demo --prepare-only --data DIR`). Replays the users' history through
the real near-line worker into a private Redis, then compares each stored vector with one encoded online 1 hour,
1 day and 1 week after it was written: top-50 overlap and cosine. Prints a table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import redis
from rich.table import Table

from cli.console import make_console
from demo.prepare import DemoData, read_events
from demo.replay import as_events
from service.history import last_context
from service.ingest import normalise
from service.models import Event
from service.redis_server import EmbeddedRedis
from service.search import search
from service.serving_model import ModelHolder
from service.settings import Settings
from service.store.keys import Keys
from service.store.streams import append_events, stream_backlog
from service.store.user_state import read_state
from service.worker import NearlineWorker

HOURS_LATER, K = (1, 24, 24 * 7), 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("demo_data"))
    parser.add_argument("--users", type=int, default=300)
    args = parser.parse_args()
    data = DemoData(args.data)
    if not data.ready():
        sys.exit(f"{args.data} is not prepared: run `recall demo --prepare-only --data {args.data}` first")
    console = make_console()
    history = read_events(data.history)
    users = history.user_id.drop_duplicates().head(args.users)
    with tempfile.TemporaryDirectory() as directory, EmbeddedRedis(Path(directory), persistence=False) as server:
        settings = Settings(redis_url=server.url, index_root=data.index, worker_block_ms=0)
        holder = ModelHolder(settings)
        holder.refresh()
        model, client = holder.current, redis.Redis.from_url(server.url)
        keys = Keys(settings.key_prefix, settings.stream_partitions)
        events = [normalise(Event(**event), time.time()) for event in as_events(history[history.user_id.isin(users)])]
        worker = NearlineWorker(client, settings, holder)
        append_events(client, keys, events, settings.dedupe_ttl_s)
        with console.status(f"encoding {len(users)} users with the near-line worker"):
            while stream_backlog(client, keys):
                worker.step()
        table = Table(title=f"Precomputed vs online encoding at request time ({len(users)} users, top-{K})")
        for column in ("request after the vector was written", f"top-{K} overlap", "cosine"):
            table.add_column(column, justify="right")
        for hours in HOURS_LATER:
            overlaps, cosines = [], []
            for user in users.astype(str):
                state = read_state(client, keys, user, model.encoder.dim)
                context, scenario = (model.known(n, v) for n, v in zip(("contexts", "scenarios"),
                                                                        last_context(state.history), strict=True))
                stored = state.vector_for(context, scenario, model.model_version)
                online = model.encode([state.history], [context], [scenario],
                                      np.array([state.updated_ms // 1000 + 3600 * hours]))[0]
                nothing = np.zeros(0, np.int64)
                served, _ = search(model, stored, K, nothing, None)
                fresh, _ = search(model, online, K, nothing, None)
                overlaps.append(len(set(served) & set(fresh)) / K)
                cosines.append(float(stored @ online))
            table.add_row(f"{hours} h", f"{np.mean(overlaps):.3f}", f"{np.mean(cosines):.4f}")
        console.print(table)


if __name__ == "__main__":
    main()
