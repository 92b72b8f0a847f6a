"""Loaders that turn the development datasets in ../shared/data into the data contract.

Each loader writes `events.parquet` (and `items.parquet` when there is side info) into a cache directory
and returns a `Prepared` (paths and the evaluation protocol that fits the data): every model then reads them
through the one contract loader. The datasets are read by path and never committed (research-use terms).
"""

from __future__ import annotations

import gzip
import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
CACHE = ROOT / "bench" / ".cache"



@dataclass
class Prepared:
    events: Path
    items: Path | None
    protocol: str  # "loo" or "temporal"
    include_cold_users: bool = False  # temporal: also evaluate users with no history before the split
    event_sessions: bool = False  # loo over clicks: hold out the last click, not the whole time-gap visit

    def split(self, log):
        """The dataset's evaluation split of `log` (loaded from `events`/`items`)."""
        from evaluation.splits import leave_one_out, temporal_split

        if self.event_sessions:
            log = log.event_sessions()
        if self.protocol == "loo":
            return leave_one_out(log)
        return temporal_split(log, include_cold_users=self.include_cold_users)


def _cached(name: str, build: Callable[[], tuple[pd.DataFrame, pd.DataFrame | None]]) -> tuple[Path, Path | None]:
    directory = CACHE / name
    events_path, items_path = directory / "events.parquet", directory / "items.parquet"
    if not events_path.exists():
        events, items = build()
        directory.mkdir(parents=True, exist_ok=True)
        if items is not None:
            items.to_parquet(items_path, index=False)
        events.to_parquet(events_path, index=False)
    return events_path, (items_path if items_path.exists() else None)


def trivago(data: Path = SHARED_DATA) -> Prepared:
    """trivago RecSys 2019 sample: each clickout is a session; its impressions are shown items, its reference
    the clicked one; the context is the searched city, the scenario the device (platform and filters would split
    the context into values too rare to learn from). Users new after the split are evaluated too (context only).

    A hotel's category is its city. The sample ships no item metadata, so the city is taken as the one the hotel
    is most often shown in: a static catalogue fact the travel site knows, not a trace of anyone's behaviour. Each
    of the ~107k hotels appears a few times in two days, too rarely for its id embedding alone to learn where it
    belongs."""

    def build() -> tuple[pd.DataFrame, pd.DataFrame]:
        raw = pd.read_parquet(data / "trivago_rsc19_sample" / "trivago_val_100k.parquet")
        clickouts = raw[(raw.action_type == "clickout item") & raw.impressions.notna()].reset_index(drop=True)
        shown = clickouts.impressions.str.split("|")
        session_id = clickouts.session_id + ":" + clickouts.step.astype(str)
        base = pd.DataFrame({"user_id": clickouts.user_id, "session_id": session_id,
                             "timestamp": clickouts.timestamp, "context": clickouts.city,
                             "scenario": clickouts.device})
        shows = base.loc[base.index.repeat(shown.str.len())].assign(item_id=np.concatenate(shown.to_numpy()),
                                                                   action="show")
        clicks = base.assign(item_id=clickouts.reference, action="click")
        events = pd.concat([shows, clicks], ignore_index=True)
        city = shows.groupby("item_id").context.agg(lambda cities: cities.value_counts().index[0])
        items = pd.DataFrame({"item_id": city.index, "category": city.to_numpy()})
        return events.sort_values(["user_id", "timestamp"], kind="stable").reset_index(drop=True), items

    # Two days of data and mostly one-visit users: a warm-only temporal split leaves a few dozen cases.
    return Prepared(*_cached("trivago_v2", build), "temporal", include_cold_users=True)


def movielens(data: Path = SHARED_DATA) -> Prepared:
    """MovieLens-100K as a sequence per user (every rating a click and its own session, in time order), the
    first genre as category, the title as title: the classic leave-one-out benchmark."""

    def build() -> tuple[pd.DataFrame, pd.DataFrame]:
        folder = data / "movielens_100k"
        ratings = pd.read_csv(folder / "ml-100k.inter.gz", sep="\t")
        ratings.columns = [c.split(":")[0] for c in ratings.columns]
        ratings = ratings.sort_values(["user_id", "timestamp"], kind="stable")
        items = pd.read_csv(folder / "ml-100k.item.gz", sep="\t")
        items.columns = [c.split(":")[0] for c in items.columns]
        genres = items["class"].fillna("").str.split()
        # Every genre and the decade as attributes (issue 25's content tower); the first genre stays the category.
        year = pd.to_numeric(items.release_year, errors="coerce")  # a few are "unknown"
        attributes = genres.map(lambda names: [f"genre:{name}" for name in names]) + year.map(
            lambda year: [f"decade:{int(year) // 10 * 10}"] if pd.notna(year) else [])
        items = pd.DataFrame({"item_id": items.item_id, "category": genres.str[0], "title": items.movie_title,
                              "attributes": attributes.str.join("|")})
        # No timestamp column: row order is time order and each rating is its own session.
        return ratings[["user_id", "item_id"]].reset_index(drop=True), items

    return Prepared(*_cached("movielens_100k", build), "loo")


class _ListsOnly(pickle.Unpickler):
    """The SR-GNN files are pickles of lists of ints: refuse any other object, so no code can run on load."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def diginetica(data: Path = SHARED_DATA) -> Prepared:
    """Diginetica (CIKM Cup 2016, SR-GNN preprocessing): each training session as a user's click sequence."""

    def build() -> tuple[pd.DataFrame, None]:
        with gzip.open(data / "diginetica" / "srgnn_gcegnn_preprocessed" / "all_train_seq.pkl.gz") as handle:
            sessions = _ListsOnly(io.BytesIO(handle.read())).load()
        lengths = np.array([len(s) for s in sessions])
        events = pd.DataFrame({"user_id": np.repeat(np.arange(len(sessions)), lengths),
                               "item_id": np.concatenate([np.asarray(s, dtype=np.int64) for s in sessions])})
        return events, None

    return Prepared(*_cached("diginetica", build), "loo")


def yoochoose(data: Path = SHARED_DATA) -> Prepared:
    """YOOCHOOSE 100k clicks: anonymous sessions, each session a user; leave-one-out on the click sequence."""

    def build() -> tuple[pd.DataFrame, None]:
        folder = data / "yoochoose_rsc15_sample"
        parts = [pd.read_csv(folder / f"yoochoose-clicks-100k_{name}.txt.gz", sep="\t")
                 for name in ("train_full", "test")]
        clicks = pd.concat(parts, ignore_index=True)
        return pd.DataFrame({"user_id": clicks.SessionId, "item_id": clicks.ItemId,
                             "timestamp": clicks.Time.astype(np.int64)}), None

    # Each "user" is one visit: leave-one-out holds out its last click and keeps the clicks before it.
    return Prepared(*_cached("yoochoose", build), "loo", event_sessions=True)


def synthetic(n_users: int = 20_000, n_items: int = 5_000, seed: int = 0) -> Prepared:
    """The synthetic world (see evaluation/synth.py), temporal split."""
    from evaluation.synth import SynthConfig, generate

    def build() -> tuple[pd.DataFrame, pd.DataFrame]:
        events, items, world = generate(SynthConfig(n_users=n_users, n_items=n_items, seed=seed))
        (CACHE / name).mkdir(parents=True, exist_ok=True)
        world.save(CACHE / name / "world.npz")
        return events, items

    name = f"synthetic_{n_users}x{n_items}_s{seed}"
    return Prepared(*_cached(name, build), "temporal")


DATASETS: dict[str, Callable[[], Prepared]] = {
    "synthetic": synthetic, "trivago": trivago, "movielens-100k": movielens, "diginetica": diginetica,
    "yoochoose": yoochoose,
}
