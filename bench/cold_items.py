"""New items known by their content: recall of items no one acted on in training (issue 25).

    python bench/cold_items.py [--datasets movielens-100k,synthetic] [--new-share 0.25] [--epochs 30] [--seed 0]
                               [--out cold_items]

Each dataset is split as bench/quality.py splits it. Then a random share of the catalogue becomes new: every
training event on those items is removed, so the model never sees them act, while the items file still gives
their category, attributes and title. The test cases are scored twice: on their targets that are new items,
ranked over the whole catalogue (the cold rows), and on their targets the model knows, ranked over the known
items (the warm rows: does content cost what the model knew?), for:

- the id-only tower (today's: id, category, seller);
- + attributes (a mean bag of attribute embeddings);
- + text (the frozen all-MiniLM-L6-v2 vector of title and description, projected);
- + semantic ids (residual k-means codes of the text vector, one learned embedding per code);
- category popularity: items of the user's most acted-on categories, the category's popularity first (what a
  shop shows for new arrivals without a model).

Every trained row is TBGRecall with the settings `recall train` picks for the log, bounded to --epochs. Content
never changes the model itself (tests/training/test_trainer.py), so each data set is trained once, with every
content input; each row is that model with its own content head fitted, which is what training the row alone
gives, bit for bit. Prints a table, writes bench/results/{out}.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
from rich.table import Table

from bench.quality import DATASET_CHOICES
from cli.console import make_console
from contract.columns import CLICK
from contract.events import EventLog, load_events
from evaluation.metrics import per_case_metrics
from evaluation.popularity import PopularModel
from evaluation.ranking import top_k
from evaluation.splits import EvalCases, Split, sample_cases, viewed_items
from training.auto_config import default_config
from training.config import RunConfig
from training.content_fit import fit_content_head
from training.model import RecallModel
from training.recommender import EncoderRecommender
from training.trainer import build_model, pick_device, seed_everything, train

RESULTS = Path(__file__).resolve().parent / "results"
KS = [10, 50]
MAX_CASES = 3000
TOWERS = {  # label -> the ModelConfig's content settings
    "id-only tower": {"item_attributes": False, "item_text": False, "semantic_id_levels": 0},
    "+ attributes": {"item_attributes": True, "item_text": False, "semantic_id_levels": 0},
    "+ text": {"item_attributes": True, "item_text": True, "semantic_id_levels": 0},
    "+ semantic ids": {"item_attributes": True, "item_text": True, "semantic_id_levels": 3},
}


class CategoryPopularModel(PopularModel):
    """Every item scored by its category alone: the categories the user acted on most first, then the more
    popular category; items of one category in a fixed random order. A new item has no popularity of its own,
    so this is what its category's popularity gives it (and a known item is ranked the same way)."""

    name = "category popularity"

    def fit(self, log: EventLog) -> CategoryPopularModel:
        super().fit(log)
        self.log = log
        acted = log.action >= CLICK
        category = log.items.category
        self.category_of = np.pad(category, (0, log.n_items - len(category))).astype(np.int64)
        category_counts = np.bincount(self.category_of[log.item[acted]], minlength=self.category_of.max() + 1)
        jitter = np.random.default_rng(0).random(log.n_items) * 1e-6
        self.base = (category_counts[self.category_of] / max(category_counts.max(), 1) + jitter).astype(np.float32)
        self.base[0] = -np.inf
        return self

    def recommend(self, cases: EvalCases, k: int, viewed=None) -> tuple[np.ndarray, np.ndarray]:
        offsets, items = viewed_items(self.log, cases.user)  # the user's history: their categories

        def score_rows(rows: np.ndarray) -> np.ndarray:
            scores = np.tile(self.base, (len(rows), 1))
            for local, row in enumerate(rows):
                counts = np.bincount(self.category_of[items[offsets[row]: offsets[row + 1]]],
                                     minlength=self.category_of.max() + 1)
                scores[local] += counts[self.category_of]  # the user's categories first
            return scores

        return top_k(score_rows, len(cases), k, *viewed or ())


def with_targets(cases: EvalCases, keep: np.ndarray) -> tuple[np.ndarray, EvalCases]:
    """The cases restricted to their targets where `keep` (by item code) holds, cases left with none dropped; and
    which cases those are (a mask over `cases`)."""
    owner = np.repeat(np.arange(len(cases)), cases.n_targets)
    kept = keep[cases.target_items]
    counts = np.bincount(owner[kept], minlength=len(cases))
    chosen = counts > 0
    return chosen, EvalCases(user=cases.user[chosen], context=cases.context[chosen], scenario=cases.scenario[chosen],
                             request_time=cases.request_time[chosen],
                             target_offsets=np.r_[0, np.cumsum(counts[chosen])], target_items=cases.target_items[kept])


def hold_out_items(split: Split, share: float, seed: int) -> tuple[Split, np.ndarray]:
    """The split with a random `share` of the items that are some case's target made new: their training events
    removed. Returns (split, is_new by item code)."""
    rng = np.random.default_rng(seed)
    candidates = np.unique(split.cases.target_items)
    new_items = rng.choice(candidates, size=round(share * len(candidates)), replace=False)
    is_new = np.zeros(split.train.n_items, dtype=bool)
    is_new[new_items] = True
    return Split(split.protocol, split.train.take(~is_new[split.train.item]), split.cases), is_new


def score(model, split: Split, is_new: np.ndarray) -> dict:
    """Recall@K and NDCG@K on the new-item targets (cold_), ranked over the whole catalogue; and on the known ones
    (warm_), ranked over the known items only: whether content costs the model what it knew, not the places new
    items rightly take in a list."""
    viewed = viewed_items(split.train, split.cases.user)
    _, recommended = model.recommend(split.cases, max(KS) + int(is_new.sum()), viewed)
    known_only = np.stack([row[~is_new[row]][: max(KS)] for row in recommended])
    # What a user is served: every target, over the whole catalogue. New items placed too high push known
    # targets out of it, which neither column above sees.
    row = {"all_" + name: float(values.mean())
           for name, values in per_case_metrics(recommended[:, : max(KS)], split.cases, KS).items()}
    row["new_share@50"] = float(is_new[recommended[:, : max(KS)]].mean())
    for prefix, keep, lists in (("cold_", is_new, recommended[:, : max(KS)]), ("warm_", ~is_new, known_only)):
        chosen, cases = with_targets(split.cases, keep)
        metrics = per_case_metrics(lists[chosen], cases, KS)
        row |= {prefix + name: float(values.mean()) for name, values in metrics.items()}
        row[prefix + "cases"] = len(cases)
    return row


def bench_dataset(name: str, args, console) -> list[dict]:
    prepared = DATASET_CHOICES[name]()
    log = load_events(prepared.events, prepared.items)
    split, is_new = hold_out_items(sample_cases(prepared.split(log), MAX_CASES), args.new_share, args.seed)
    console.print(f"[bold]{name}[/]: {int(is_new.sum())} of {log.n_items - 1} items new to the model; "
                  f"{len(split.train):,} training events")
    rows = [{"model": CategoryPopularModel.name, **score(CategoryPopularModel().fit(split.train), split, is_new)}]
    base, _ = default_config(split.train, args.budget, pick_device("auto"), prepared.protocol)
    base = replace(base, train=replace(base.train, epochs=args.epochs, seed=args.seed))
    console.print(f"[bold]{name}[/]: training (once: content does not change the model)")
    trained = train(split.train, replace(base, model=replace(base.model, **TOWERS["+ semantic ids"])),
                    protocol=prepared.protocol)
    for label, changes in TOWERS.items():
        if args.towers and label not in args.towers.split(","):
            continue
        started = time.perf_counter()
        model = with_own_head(trained.model, split.train, replace(base, model=replace(base.model, **changes)))
        rows.append({"model": label, **score(EncoderRecommender(model, split.train, name=label), split, is_new),
                     "train_seconds": trained.seconds + time.perf_counter() - started,
                     "epochs": len(trained.history), "item_content": model.content_stats})
    return rows


def with_own_head(trained: RecallModel, log: EventLog, config: RunConfig) -> RecallModel:
    """The model `train(log, config)` returns, from a model trained on `log` with more content: the same weights
    outside the content head (content never changes them), and a content head of this config's inputs,
    initialised and fitted as training does."""
    seed_everything(config.train.seed, config.train.deterministic)
    seen = trained.item_tower.item_seen.cpu().numpy()  # the items training had events for
    model = build_model(log, config, trained.task_bias.device, None, seen)
    state = model.state_dict()
    state.update({name: value for name, value in trained.state_dict().items()  # buffers too: as training set them
                  if name in state and "content_head." not in name})
    model.load_state_dict(state)
    if config.model.item_content:
        model.content_stats["head"] = fit_content_head(model.item_tower, config.train.seed, show_progress=False)
    return model.eval()


COLUMNS = [("model", "model"), ("cold_recall@50", "new items Recall@50"), ("cold_ndcg@10", "new NDCG@10"),
           ("warm_recall@50", "known Recall@50"), ("warm_ndcg@10", "known NDCG@10"),
           ("all_recall@50", "served Recall@50"), ("new_share@50", "new items in the top 50"),
           ("train_seconds", "train s")]


def cell(row: dict, key: str) -> str:
    value = row.get(key)
    return "" if value is None else value if isinstance(value, str) else f"{value:.0f}" if key == "train_seconds" \
        else f"{value:.4f}"


def markdown(results: dict[str, list[dict]], command: str) -> str:
    lines = [f"Made by `{command}` on a 2-core CPU.", ""]
    for name, rows in results.items():
        lines += [f"### {name} ({rows[0]['cold_cases']} cases with a new target, {rows[0]['warm_cases']} with a "
                  "known one)", "", "| " + " | ".join(title for _, title in COLUMNS) + " |",
                  "|---" + "|---:" * (len(COLUMNS) - 1) + "|"]
        lines += ["| " + " | ".join(cell(row, key) for key, _ in COLUMNS) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 4), squeeze=False)
    for axis, (name, rows) in zip(axes[0], results.items(), strict=True):
        labels = [row["model"] for row in rows]
        positions = np.arange(len(rows))
        axis.barh(positions - 0.2, [row["cold_recall@50"] for row in rows], 0.4, label="new items")
        axis.barh(positions + 0.2, [row["warm_recall@50"] for row in rows], 0.4, label="known items")
        axis.set_yticks(positions, labels)
        axis.invert_yaxis()
        axis.set_title(name)
        axis.set_xlabel("Recall@50")
        axis.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="movielens-100k,synthetic")
    parser.add_argument("--new-share", type=float, default=0.25, help="share of the target items made new")
    parser.add_argument("--epochs", type=int, default=30, help="epoch bound of every trained row")
    parser.add_argument("--budget", type=float, default=30 * 60, help="time budget of every trained row (s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--towers", help="comma-separated tower labels to train (default: all)")
    parser.add_argument("--out", default="cold_items", help="name of the result files (one per concurrent run)")
    args = parser.parse_args()
    console = make_console()
    results, started = {}, time.perf_counter()
    for name in args.datasets.split(","):
        results[name] = bench_dataset(name, args, console)
        table = Table(title=f"{name}: new items from their content")
        for _, title in COLUMNS:
            table.add_column(title, justify="left" if title == "model" else "right")
        for row in results[name]:
            table.add_row(*(cell(row, key) for key, _ in COLUMNS))
        console.print(table)
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.out}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / f"{args.out}.md").write_text(markdown(results, "python bench/cold_items.py " + " ".join(sys.argv[1:])))
    plot(results, RESULTS / f"{args.out}.png")
    console.print(f"done in {time.perf_counter() - started:.0f} s; wrote {RESULTS}/{args.out}.{{json,md,png}}")


if __name__ == "__main__":
    main()
