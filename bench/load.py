"""Data-contract loading speed: events per second from Parquet and CSV, and peak memory.

    python bench/load.py [--events 10000000] [--quick]

Target (issue 2): 10M events load in well under a minute on a 2-core machine.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa
import pyarrow.csv as pa_csv
from rich.table import Table

from bench.datasets import CACHE
from cli.console import make_console
from contract.events import load_events
from evaluation.synth import SynthConfig, generate

EVENTS_PER_USER = 120  # about 6 sessions of ~20 shown items plus their clicks


def write_inputs(n_events: int, directory: Path) -> dict[str, Path]:
    paths = {"parquet": directory / "events.parquet", "csv": directory / "events.csv",
             "items": directory / "items.parquet"}
    if all(path.exists() for path in paths.values()):
        return paths
    directory.mkdir(parents=True, exist_ok=True)
    events, items, _ = generate(SynthConfig(n_users=max(n_events // EVENTS_PER_USER, 1), n_items=100_000))
    events.to_parquet(paths["parquet"], index=False)
    items.to_parquet(paths["items"], index=False)
    table = pa.Table.from_pandas(events.astype({"action": str, "context": str, "scenario": str}),
                                 preserve_index=False)
    pa_csv.write_csv(table, paths["csv"])
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--quick", action="store_true", help="1M events")
    args = parser.parse_args()
    n_events = 1_000_000 if args.quick else args.events
    console = make_console()
    with console.status(f"generating about {n_events:,} synthetic events (cached)"):
        paths = write_inputs(n_events, CACHE / f"load_{n_events}")
    table = Table(title="Loading the data contract (sessions, vocabularies, validation included)")
    for column in ("format", "events", "seconds", "events/s", "peak RSS (GiB)"):
        table.add_column(column, justify="right")
    for name in ("parquet", "csv"):
        started = time.perf_counter()
        log = load_events(paths[name], paths["items"])
        seconds = time.perf_counter() - started
        peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        table.add_row(name, f"{len(log):,}", f"{seconds:.1f}", f"{len(log) / seconds:,.0f}", f"{peak_gib:.1f}")
        del log
    console.print(table)


if __name__ == "__main__":
    main()
