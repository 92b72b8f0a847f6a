"""Train one of RecTools' own sequential models on a given split and write its top-k recommendations.

Runs in RecTools' separate virtualenv (see bench/rectools_setup.sh); imports nothing from this project.

    bench/.cache/rectools-venv/bin/python bench/rectools_peer.py \
        --train TRAIN.parquet --users USERS.csv --out RECS.csv --json META.json \
        --model sasrec|hstu --dim 64 --layers 2 --heads 2 --max-len 200 --epochs N --k 100 \
        --loss softmax|gBCE|BCE [--n-negatives 256] [--lr 1e-3] [--batch-size 128] [--dropout 0.2] [--seed 0]

TRAIN.parquet: user_id, item_id, timestamp (int64, orders the events; read as seconds), weight.
USERS.csv: one column user_id, the users to recommend for (all present in TRAIN).
RECS.csv gets user_id,item_id,rank (1 = best, already-seen items filtered out) for the users RecTools can score;
META.json gets
train_seconds, epochs, n_users, sequences_per_second, rectools_version and model.
Exit code 3 (one line on stderr) when this RecTools version has no such model.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rectools
import rectools.models
from pytorch_lightning import seed_everything
from rectools import Columns
from rectools.dataset import Dataset

MODEL_CLASSES = {"sasrec": "SASRecModel", "hstu": "HSTUModel"}
MISSING_MODEL = 3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line described in the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--train", "--users", "--out", "--json"):
        parser.add_argument(name, type=Path, required=True)
    parser.add_argument("--model", choices=sorted(MODEL_CLASSES), required=True)
    parser.add_argument("--loss", choices=["softmax", "gBCE", "BCE"], default="softmax")
    for name, default in (("--dim", 64), ("--layers", 2), ("--heads", 2), ("--max-len", 200), ("--epochs", 3),
                          ("--k", 100), ("--n-negatives", 256), ("--batch-size", 128), ("--seed", 0)):
        parser.add_argument(name, type=int, default=default)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--dropout", type=float, default=0.2)
    return parser.parse_args(argv)


def cpu_only_and_quiet() -> None:
    """Hide any GPU (torch initialises CUDA lazily, so this still works after the import) and silence Lightning's
    banners ("GPU available: ...") and the warnings it raises on a CPU-only run."""
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def load_interactions(path: Path) -> pd.DataFrame:
    """The training interactions in RecTools' columns; integer timestamps are taken as seconds."""
    train = pd.read_parquet(path)
    return pd.DataFrame({
        Columns.User: train["user_id"].astype(np.int64),
        Columns.Item: train["item_id"].astype(np.int64),
        Columns.Weight: train["weight"].astype(float),
        Columns.Datetime: pd.to_datetime(train["timestamp"].astype(np.int64), unit="s"),
    })


def request_context(interactions: pd.DataFrame, users: np.ndarray) -> pd.DataFrame:
    """One row per user for models that need the request time (HSTU): one second after their last event."""
    last_seen = interactions.groupby(Columns.User)[Columns.Datetime].max()
    return pd.DataFrame({Columns.User: users, Columns.Weight: 1.0,
                         Columns.Datetime: last_seen.reindex(users).to_numpy() + pd.Timedelta(seconds=1)})


def build_model(args: argparse.Namespace) -> Any:
    """The requested RecTools model on CPU, or exit with code 3 when this version lacks it."""
    model_class = getattr(rectools.models, MODEL_CLASSES[args.model], None)
    if model_class is None:
        print(f"rectools {rectools.__version__} has no {MODEL_CLASSES[args.model]}", file=sys.stderr)
        sys.exit(MISSING_MODEL)
    return model_class(
        n_factors=args.dim, n_blocks=args.layers, n_heads=args.heads, session_max_len=args.max_len,
        epochs=args.epochs, loss=args.loss, n_negatives=args.n_negatives, lr=args.lr, batch_size=args.batch_size,
        dropout_rate=args.dropout, deterministic=True, verbose=0, recommend_torch_device="cpu",
    )


def write_recommendations(recs: pd.DataFrame, path: Path) -> None:
    """user_id,item_id,rank as CSV, best first within each user."""
    recs = recs[[Columns.User, Columns.Item, Columns.Rank]].rename(columns={Columns.Rank: "rank"})
    recs.astype({"rank": np.int64}).sort_values(["user_id", "rank"]).to_csv(path, index=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpu_only_and_quiet()
    model = build_model(args)
    seed_everything(args.seed, workers=True)
    interactions = load_interactions(args.train)
    dataset = Dataset.construct(interactions)
    started = time.perf_counter()
    model.fit(dataset)
    train_seconds = time.perf_counter() - started
    n_users = int(dataset.user_id_map.size)
    users = pd.read_csv(args.users)["user_id"].astype(np.int64).to_numpy()
    # RecTools trains only on sequences long enough to learn from, so items seen only in shorter ones stay unknown
    # to it, and it refuses a whole request holding a user whose history has no known item. Those users are left
    # out of RECS.csv, like new users.
    known_items = model.data_preparator.get_known_item_ids()
    users = users[np.isin(users, interactions.loc[interactions[Columns.Item].isin(known_items), Columns.User])]
    context = request_context(interactions, users) if model.require_recommend_context else None
    recs = model.recommend(users=users, dataset=dataset, k=args.k, filter_viewed=True, context=context)
    write_recommendations(recs, args.out)
    meta = {"train_seconds": train_seconds, "epochs": args.epochs, "n_users": n_users,
            "sequences_per_second": n_users * args.epochs / train_seconds,
            "rectools_version": rectools.__version__, "model": args.model}
    args.json.write_text(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
