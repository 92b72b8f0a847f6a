"""Training past one machine's memory and past one process: peak memory against log size, and data-parallel speed.

    python bench/scale.py [--sizes 1,5,20] [--epochs 3] [--part all|memory|processes]

Memory. Synthetic logs of 1M, 5M and 20M events: Parquet directories of 1M-event files, each file a world of
7,500 users over one 5,000-item catalogue. Each log is measured in a fresh process, two ways:
- in memory: `load_events` reads the whole log, then the trainer's windows are built for all of it;
- streamed: the sharding pass (contract/user_shards.py, shards of 1M events), then the trainer reads every shard in
  turn and builds its windows, as an epoch does.
Both build the default TBGRecall model and take 10 real training steps on each part they hold (the log, or each
shard), so the peak includes the model, optimiser and activations. The figure is the process's peak RSS. Speed is
events per second through the data path (reading, validating, sessionising, windows), training steps excluded.

Processes. `recall train --nproc N` for N = 1 and 2 on the synthetic world (bench/datasets.py, 20k users, the
product's defaults, the same epochs and seed): sequences per second over all processes, and validation NDCG@10.

Prints a table and writes bench/results/scale.json and bench/results/scale.png (peak RSS against events).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from rich.table import Table

from cli.console import make_console

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DATA = ROOT / "bench" / ".cache" / "scale"
FILE_USERS, N_ITEMS = 7_500, 5_000  # about 1M events per file
SHARD_EVENTS = 1_000_000
STEPS_PER_PART = 10


def write_logs(max_files: int) -> Path:
    """1M-event Parquet files 0..max_files-1 under DATA/files (cached); a log of N files links the first N."""
    from evaluation.synth import SynthConfig, generate

    files = DATA / "files"
    files.mkdir(parents=True, exist_ok=True)
    for index in range(max_files):
        path = files / f"part-{index:03d}.parquet"
        if path.exists():
            continue
        events, items, _ = generate(SynthConfig(n_users=FILE_USERS, n_items=N_ITEMS, seed=index))
        events["user_id"] = f"f{index}-" + events["user_id"].astype(str)  # each file its own users
        events["event_id"] += index * 10**9  # unique over the log, as the contract asks
        events.to_parquet(path.with_suffix(".tmp"), index=False)
        path.with_suffix(".tmp").rename(path)
        if index == 0:
            items.to_parquet(DATA / "items.parquet", index=False)
    return files


def log_of(files: Path, n_files: int) -> Path:
    directory = DATA / f"log-{n_files}"
    directory.mkdir(exist_ok=True)
    for index in range(n_files):
        link = directory / f"part-{index:03d}.parquet"
        if not link.exists():
            link.symlink_to(files / link.name)
    return directory


def measure(mode: str, events: Path, items: Path) -> dict:
    """Run in a fresh process: the data path of one epoch, and 10 training steps per part, in `mode`."""
    from contract.events import load_events
    from contract.tokens import collate
    from contract.user_shards import write_user_shards
    from training.config import RunConfig, TrainConfig, readable_log
    from training.recommender import to_tensors
    from training.trainer import BatchLoss, InMemoryData, StreamedData, build_model, length_bucketed_batches

    torch.set_num_threads(1)
    config, device = RunConfig(train=TrainConfig(threads=1)), torch.device("cpu")
    started, step_seconds = time.perf_counter(), 0.0
    with tempfile.TemporaryDirectory() as scratch:
        if mode == "memory":
            log = load_events(events, items)
            n_events, model_log = len(log), log
            source = InMemoryData(readable_log(log, config.model), config, device)
        else:
            shards = write_user_shards(events, items, Path(scratch) / "shards", SHARD_EVENTS, 1800,
                                       show_progress=False)
            n_events, model_log = shards.events, shards.load(0)
            source = StreamedData(shards, np.arange(shards.n_shards),
                                  lambda shard: readable_log(shards.load(shard), config.model), config, device)
        model = build_model(model_log, config, device, None)
        del model_log
        step = BatchLoss(model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        rng = np.random.default_rng(0)
        windows = 0
        for data in source.parts(rng):
            windows += len(data.windows)
            step_started = time.perf_counter()
            for batch in length_bucketed_batches(data.lengths, config.train.batch_size, rng)[:STEPS_PER_PART]:
                loss = step(to_tensors(collate(data.tokens, data.windows[batch]), device), config.loss,
                            source.item_log_prob)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            step_seconds += time.perf_counter() - step_started
            del data
    data_seconds = time.perf_counter() - started - step_seconds
    return {"mode": mode, "events": n_events, "windows": windows,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "data_seconds": data_seconds, "events_per_second": n_events / data_seconds}


def measure_in_child(mode: str, events: Path, items: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", mode, "--events", str(events), "--items",
                             str(items)], capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def train_processes(nproc: int, epochs: int, out: Path) -> dict:
    from bench.datasets import synthetic

    prepared = synthetic()
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "cli", "train", "--events", str(prepared.events), "--items",
                    str(prepared.items), "--out", str(out), "--epochs", str(epochs), "--seed", "0", "--nproc",
                    str(nproc)], check=True, cwd=ROOT)
    metrics = json.loads((out / "metrics.json").read_text())
    return {"nproc": nproc, "world_size": metrics["world_size"], "epochs": epochs,
            "sequences_per_second": metrics["sequences_per_second"], "ndcg@10": metrics["validation"]["ndcg@10"],
            "user_shards": metrics["data"]["user_shards"], "wall_seconds": time.perf_counter() - started}


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for mode, label in (("memory", "in memory (load_events)"), ("streamed", "streamed user shards (1M events)")):
        points = sorted((row["events"] / 1e6, row["peak_rss_mb"] / 1024) for row in rows if row["mode"] == mode)
        axis.plot(*zip(*points, strict=True), marker="o", label=label)
    axis.set_xlabel("events in the log (millions)")
    axis.set_ylabel("peak RSS (GiB)")
    axis.set_title("Training memory against log size")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,5,20", help="log sizes in millions of events")
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each `recall train --nproc N` run")
    parser.add_argument("--part", choices=("all", "memory", "processes"), default="all",
                        help="measure one part; the other keeps its figures from the last scale.json")
    parser.add_argument("--child", choices=("memory", "streamed"), help=argparse.SUPPRESS)
    parser.add_argument("--events", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--items", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.events, args.items)))
        return
    console = make_console()
    results_path = RESULTS / "scale.json"
    last = json.loads(results_path.read_text()) if results_path.exists() else {}
    memory_rows = measure_memory(console, [int(size) for size in args.sizes.split(",")]) \
        if args.part in ("all", "memory") else last.get("memory", [])
    process_rows = measure_processes(console, args.epochs) if args.part in ("all", "processes") \
        else last.get("processes", [])
    RESULTS.mkdir(exist_ok=True)
    results_path.write_text(json.dumps({"memory": memory_rows, "processes": process_rows, "cores": os.cpu_count()},
                                       indent=2))


def measure_memory(console, sizes: list[int]) -> list[dict]:
    with console.status("writing the synthetic logs"):
        files = write_logs(max(sizes))
    rows = []
    for size in sizes:
        for mode in ("memory", "streamed"):
            with console.status(f"{size}M events, {mode}"):
                rows.append(measure_in_child(mode, log_of(files, size), DATA / "items.parquet"))
    table = Table(title="training memory and data-path speed by log size (one process, one thread)")
    for column in ("events", "mode", "peak RSS (MiB)", "events/s (data path)", "windows"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(f"{row['events']:,}", row["mode"], f"{row['peak_rss_mb']:,.0f}",
                      f"{row['events_per_second']:,.0f}", f"{row['windows']:,}")
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    plot(rows, RESULTS / "scale.png")
    return rows


def measure_processes(console, epochs: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as scratch:
        rows = [train_processes(nproc, epochs, Path(scratch) / f"run-{nproc}") for nproc in (1, 2)]
    table = Table(title=f"recall train --nproc N on the synthetic world, {epochs} epochs, seed 0")
    for column in ("processes", "sequences/s (all)", "validation NDCG@10", "user shards", "wall s"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["nproc"]), f"{row['sequences_per_second']:,.0f}", f"{row['ndcg@10']:.4f}",
                      str(row["user_shards"]), f"{row['wall_seconds']:,.0f}")
    console.print(table)
    return rows

if __name__ == "__main__":
    main()
