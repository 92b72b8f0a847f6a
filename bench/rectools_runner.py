"""RecTools' own models as external peers: trained in a separate virtualenv (RecTools pins its own numpy and
Lightning), fed exactly our split, scored by our metrics."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from contract.columns import CLICK
from evaluation.metrics import summarize
from evaluation.popularity import PopularModel
from evaluation.splits import Split, viewed_items

BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".cache" / "rectools-venv"
LABELS = {"sasrec": "RecTools SASRec", "hstu": "RecTools HSTU"}


def ensure_venv(console) -> Path | None:
    """The peer's python, or None (with a message) when RecTools cannot be installed here."""
    result = subprocess.run(["bash", str(BENCH / "rectools_setup.sh"), str(VENV)], capture_output=True, text=True)
    if result.returncode != 0:
        console.print(f"[yellow]skipping RecTools: {result.stdout.strip()[-300:]} {result.stderr.strip()[-300:]}")
        return None
    return VENV / "bin" / "python"


def evaluate_peer(split: Split, model: str, ks: list[int], epochs: int, console, seed: int,
                  max_len: int, loss: str = "softmax") -> list[dict]:
    """Train RecTools' `model` ("sasrec" or "hstu") on the split's acted events; one result row, or none.

    RecTools cannot recommend for a user it never saw act (a new user, or one who was only shown items), nor for
    one whose every item it left out of training (see rectools_peer.py), so those test users get the popularity
    list instead, as a deployment of it would; the row's label says how many."""
    python = ensure_venv(console)
    if python is None:
        return []
    train = split.train
    acted = train.action >= CLICK
    case_users = np.unique(split.cases.user)
    warm_users = case_users[np.isin(case_users, train.user[acted])]
    if len(warm_users) < len(case_users):
        console.print(f"RecTools {model}: {len(case_users) - len(warm_users)} of {len(case_users)} test users "
                      "never acted in training; they get the popularity list")
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        # Real seconds where the data has them (HSTU's time attention reads them), else our event order.
        order = train.timestamp[acted] if train.has_timestamp else np.arange(int(acted.sum()))
        pd.DataFrame({"user_id": train.user[acted].astype(np.int64), "item_id": train.item[acted].astype(np.int64),
                      "timestamp": order.astype(np.int64), "weight": 1.0}).to_parquet(folder / "train.parquet")
        pd.DataFrame({"user_id": warm_users.astype(np.int64)}).to_csv(folder / "users.csv", index=False)
        command = [str(python), str(BENCH / "rectools_peer.py"), "--train", str(folder / "train.parquet"),
                   "--users", str(folder / "users.csv"), "--out", str(folder / "recs.csv"),
                   "--json", str(folder / "meta.json"), "--model", model, "--dim", "64", "--layers", "2",
                   "--heads", "2", "--max-len", str(max_len), "--epochs", str(epochs), "--k", str(max(ks)),
                   "--loss", loss, "--seed", str(seed)]
        started = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            console.print(f"[yellow]RecTools {model} did not run: {result.stderr.strip()[-400:]}")
            return []
        recs = pd.read_csv(folder / "recs.csv")
        meta = json.loads((folder / "meta.json").read_text())
    scored_users = recs.user_id.nunique()
    if scored_users < len(warm_users):
        console.print(f"RecTools {model}: {len(warm_users) - scored_users} more test users have no item RecTools "
                      "trained on; they get the popularity list")
    cold_share = 1.0 - scored_users / len(case_users)
    recommended = with_popular_for_cold(recs, split, max(ks))
    metrics = summarize(recommended, split.cases, ks, train.n_items)
    label = f"{LABELS[model]} ({loss})"
    if cold_share:
        label += f", popular for {cold_share:.0%} cold users"
    return [{"model": label, **metrics, "train_seconds": meta.get("train_seconds", time.perf_counter() - started),
             "sequences_per_second": meta.get("sequences_per_second", 0.0), "epochs": meta.get("epochs", epochs)}]


def with_popular_for_cold(recs: pd.DataFrame, split: Split, k: int) -> np.ndarray:
    """(n_cases, k) item codes in case order: the user's rows of a user_id,item_id,rank table, or for a user absent
    from it the most popular items they have not acted on (0 pads a shorter list)."""
    users = split.cases.user
    _, matrix = PopularModel().fit(split.train).recommend(split.cases, k, viewed_items(split.train, users))
    matrix = matrix.astype(np.int64)
    top = recs.sort_values(["user_id", "rank"]).groupby("user_id").head(k)
    rec_users, user_row = np.unique(top.user_id.to_numpy(), return_inverse=True)
    rec_items = np.zeros((len(rec_users), k), dtype=np.int64)
    rec_items[user_row, top.groupby("user_id").cumcount().to_numpy()] = top.item_id.to_numpy()
    found = np.searchsorted(rec_users, users).clip(max=max(len(rec_users) - 1, 0))
    warm = (rec_users[found] == users) if len(rec_users) else np.zeros(len(users), dtype=bool)
    matrix[warm] = rec_items[found[warm]]
    return matrix
