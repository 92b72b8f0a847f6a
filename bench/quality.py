"""Recall quality of every encoder and TBGRecall ablation, side by side with the popularity baselines and
RecTools' own SASRec/HSTU on the same split.

    python bench/quality.py [--datasets synthetic,movielens-100k,trivago] [--epochs N] [--variants ...]
                            [--patience N] [--rectools sasrec,hstu] [--rectools-epochs 30] [--seeds 1]
                            [--first-seed 0] [--quick]

The `default` row sets nothing: it trains what `recall train` picks for the log with no flags
(training/auto_config.py, a 30-minute budget), so it is the figure a new user gets.

Results of each (dataset, model, configuration) are kept as small JSON files in bench/quality_runs/, which git
tracks: the whole table takes longer than one working session on a 2-core CPU, so an interrupted run resumes where
it stopped, on this machine or on a fresh clone. Bumping CODE_VERSION (or changing a configuration) retrains.

With `--seeds N` every trained model (ours and RecTools') runs with seeds 0..N-1 and its row holds the means, with
the standard error of NDCG@10 across seeds: on a thousand test users one seed moves NDCG@10 by several percent.

Prints one table per dataset (Recall@10/50/100, NDCG@10, training seconds, sequences/s), writes
bench/results/quality.json, bench/results/quality.md and a bar chart bench/results/quality.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from rich.table import Table

from bench import rectools_runner
from bench.datasets import DATASETS, synthetic
from cli.console import make_console
from contract.events import load_events
from evaluation.evaluate import evaluate
from evaluation.popularity import ContextPopularModel, PopularModel
from evaluation.splits import leave_one_out, sample_cases
from training.auto_config import default_config
from training.config import LossConfig, ModelConfig, RunConfig, TrainConfig
from training.pipeline import print_choices
from training.recommender import EncoderRecommender
from training.trainer import pick_device, train

KS = [10, 50, 100]
RESULTS = Path(__file__).resolve().parent / "results"
FINISHED_RUNS = Path(__file__).resolve().parent / "quality_runs"
MAX_CASES = 3000
NOT_RUN = "not run yet"
CODE_VERSION = 5  # bump when a change to our models should invalidate their cached results
# ... and here when a change touches one (encoder, layout) only: retraining every row takes longer than a day.
PATH_VERSIONS = {("tbgrecall", "items"): 1}  # 1: no input MLP, no Linear head on the next item
# ... and here when a change to the validation holdout changes what a run trains on. Only loo logs with more users
# than a run validates are affected. 1: only the validated users lose their last target (before: every user).
HOLDOUT_VERSION = 1


@dataclass
class Variant:
    label: str
    model: dict
    loss: dict
    needs_context: bool = False  # an ablation that only means something when the data has contexts
    needs_sessions: bool = False  # ... when sessions hold several items (else it equals the full model)
    cpu_max_items: int | None = None  # larger catalogues train only on a GPU (the table says so, and why)
    chosen_for_the_log: bool = False  # what `recall train` picks for the log, then `model`, `loss`, `train` on top
    needs_sampled_loss: bool = False  # ... where the log's pick is a sampled loss (else it equals the default row)
    train: dict = field(default_factory=dict)  # (only on top of the log's pick)


# Full softmax over the catalogue wants a softer temperature than 256 sampled negatives: on MovieLens-100K
# validation, TBGRecall reached NDCG@10 0.095 at 0.05, 0.108 at 0.1 and 0.104 at 0.2 (see BENCHMARKS.md).
SOFTMAX = {"retrieval": "softmax", "temperature": 0.1}
SASREC = Variant("SASRec (softmax)", {"encoder": "sasrec"}, SOFTMAX)
TBGRECALL = Variant("TBGRecall", {}, {})
DEFAULT = Variant("default", {}, {}, chosen_for_the_log=True)
# Mixed negatives (Yang et al., WWW 2020): half of the default's sampled negatives from the batch's positives.
DEFAULT_MIXED = Variant("default (mixed negatives)", {}, {"negatives": "mixed"}, chosen_for_the_log=True,
                        needs_sampled_loss=True)
# LiGR's gated residual (eSASRec's best layer), on the default's TBGRecall blocks
DEFAULT_GATED = Variant("default (gated residual)", {"gated_residual": True}, {}, chosen_for_the_log=True)
# After early stopping, retrain on everything (the validation holdout too) for the best epoch count
DEFAULT_REFIT = Variant("default (refit)", {}, {}, chosen_for_the_log=True, train={"refit": True})
# Fewer shared negatives than the default picks where it samples (trivago: 1,024; the tuned rows there use 256)
DEFAULT_256 = Variant("default (256 negatives)", {}, {"n_negatives": 256}, chosen_for_the_log=True,
                      needs_sampled_loss=True)
DEFAULT_BUDGET_S = 30 * 60  # `recall train --time-budget`'s default
VARIANTS = [
    DEFAULT,
    DEFAULT_MIXED,
    DEFAULT_GATED,
    DEFAULT_REFIT,
    DEFAULT_256,
    SASREC,
    Variant("SASRec (gBCE)", {"encoder": "sasrec"}, {"retrieval": "gbce"}),
    Variant("BERT4Rec (softmax)", {"encoder": "bert4rec"}, SOFTMAX),
    TBGRECALL,
    # TBGRecall has a pair per shown item, each scored against the whole catalogue: on trivago's 107k hotels a
    # batch of 40k pairs took 7 minutes on a shared CPU core, which makes an epoch hours long.
    Variant("TBGRecall (softmax)", {}, SOFTMAX, cpu_max_items=20_000),
    Variant("TBGRecall - context", {"use_context": False}, {}, needs_context=True),
    Variant("TBGRecall learned positions", {"positions": "learned"}, {}),
    Variant("TBGRecall causal mask", {"attention_mask": "causal"}, {}, needs_sessions=True),
    Variant("TBGRecall no type towers", {"type_towers": False}, {}),
    Variant("TBGRecall - L_click/L_pay", {}, {"click_weight": 0.0, "pay_weight": 0.0}, needs_context=True),
    Variant("TBGRecall m=1", {"n_future_sessions": 1}, {}),
    Variant("TBGRecall - previous session", {"previous_session": False}, {}),
]
DATASET_CHOICES = {**DATASETS, "synthetic": lambda: synthetic(n_users=2000, n_items=1500)}
# Upper bounds for our encoders (early stopping ends most runs sooner). MovieLens-100K gets more: with 943 users an
# epoch is a few dozen steps, and its validation NDCG@10 was still rising at epoch 50.
EPOCHS = {"synthetic": 30, "movielens-100k": 60, "trivago": 30, "yoochoose": 60, "diginetica": 30}
# RecTools pads every training sequence to its max_len (ours batch by length), and its softmax scores every padded
# position. trivago's longest click history is 44, so 50 cuts nothing there and makes a run 4x cheaper: at 200
# neither RecTools model had finished after an hour. YOOCHOOSE's visits hold at most 77 clicks, and 4 of 21k more
# than 50.
RECTOOLS_MAX_LEN = {"trivago": 50, "diginetica": 50, "yoochoose": 50}
# RecTools' softmax scores every padded position against the catalogue: on Diginetica's 43k items an epoch would
# take over an hour on this CPU, so it trains with gBCE over 256 negatives there, its own large-catalogue recipe.
RECTOOLS_LOSS = {"diginetica": "gBCE"}
# Diginetica's 186k users x 43k items make a full-softmax epoch of our tuned rows minutes long: they get twice the
# default row's budget instead of an epoch bound they would never reach in a working session.
TUNED_BUDGET_S = {"diginetica": 3600.0}
MAX_LEN = 200  # tokens of history our encoders read, and RecTools' max_len where RECTOOLS_MAX_LEN has none


TUNED_PATIENCE = 10  # the tuned rows' early stopping (their cached runs' keys hold it)


def run_config(variant: Variant, epochs: int, seed: int = 0, patience: int = TUNED_PATIENCE,
               time_budget_s: float = 0.0) -> RunConfig:
    base = RunConfig(model=ModelConfig(dim=64, n_layers=2, n_heads=2, max_len=MAX_LEN, dropout=0.2),
                     loss=LossConfig(n_negatives=256),
                     train=TrainConfig(epochs=epochs, batch_size=128, lr=1e-3, seed=seed, patience=patience,
                                       time_budget_s=time_budget_s))
    return RunConfig(model=replace(base.model, **variant.model), loss=replace(base.loss, **variant.loss),
                     train=base.train)


# Settings added after runs were cached, newest first, each group with the value that behaves as the code before
# it did (None: any value, it cannot change results: streaming gives the same windows, BENCHMARKS.md). A run cached
# before a group existed is found under the key without it, so adding a setting does not invalidate every run.
LATER_SETTINGS = [{("model", "gated_residual"): False},
                  {("loss", "mask_session_positives"): False},
                  {("model", "item_attributes"): False, ("model", "item_text"): False,
                   ("model", "semantic_id_levels"): 0},
                  {("train", "shard_events"): None},
                  {("train", "time_budget_s"): 0.0, ("model", "layout"): "sessions"}]
# Settings since removed, with the value runs were cached under while they existed. Such a run is found again
# where the removal cannot change it: loss.content_weight weighed a content head's loss, and a run without item
# content had none.
RETIRED_SETTINGS = {("loss", "content_weight"): 1.0}


def code_keys(config: RunConfig, loo_users: int = 0) -> list[dict]:
    """The keys a cached run of this configuration may be stored under, the current one first: its configuration
    and the version of the code on its path, then the same without the settings added since, where they hold
    their neutral values. `loo_users`: the users a loo validation holdout could take (0 under temporal)."""
    settings = config.to_dict()
    path_version = PATH_VERSIONS.get((config.model.encoder, config.model.layout))
    versions = {"code": CODE_VERSION} if path_version is None else {"code": CODE_VERSION, "path_code": path_version}
    if loo_users > config.train.valid_max_cases:
        versions["holdout"] = HOLDOUT_VERSION
    keys = [{**settings, **versions}]
    if not config.model.item_content:
        retired = {section: dict(values) for section, values in settings.items()}
        for (section, name), value in RETIRED_SETTINGS.items():
            retired[section][name] = value
        keys.append({**retired, **versions})
    for group in LATER_SETTINGS:
        if any(neutral is not None and settings[section][name] != neutral
               for (section, name), neutral in group.items()):
            break
        settings = {section: dict(values) for section, values in settings.items()}
        for section, name in group:
            del settings[section][name]
        keys.append({**settings, **versions})
    return keys


def cached(name: str, label: str, keys: list[dict], compute, train_missing: bool = True) -> list[dict]:
    """Rows of one model on one dataset, reused while its configuration is unchanged, so an interrupted run
    resumes and a re-run only trains what changed. `keys`: where the run may be stored, the first for a new one.
    With `train_missing` False a run not yet made has no rows."""

    def path_of(key: dict) -> Path:
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
        return FINISHED_RUNS / f"{name}-{label.replace(' ', '_').replace('/', '_')}-{digest}.json"

    for path in map(path_of, keys):
        if path.exists():
            return json.loads(path.read_text())
    path = path_of(keys[0])
    if not train_missing:
        return []
    rows = compute()
    if rows:  # no rows: the model could not run (RecTools not installable); try again next time
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(rows))
    return rows


def mean_over_seeds(rows: list[dict]) -> dict:
    """One row from the same model's rows under different seeds: numeric fields averaged, plus `seeds` and
    `ndcg@10_se`, the standard error of the mean NDCG@10 (0 for a single seed)."""
    merged = {key: statistics.fmean(row[key] for row in rows) if isinstance(value, int | float) else value
              for key, value in rows[0].items()}
    ndcg = [row["ndcg@10"] for row in rows]
    return {**merged, "seeds": len(rows),
            "ndcg@10_se": statistics.stdev(ndcg) / len(ndcg) ** 0.5 if len(ndcg) > 1 else 0.0}


@dataclass
class Plan:
    """What to train on every dataset."""
    variants: list[Variant]
    epochs: int | None  # None: the dataset's entry in EPOCHS
    patience: int | None  # None: TUNED_PATIENCE for the tuned rows, `recall train`'s own for the default row
    rectools: list[str]  # RecTools models to run as peers
    rectools_epochs: int
    seeds: int
    train_missing: bool = True  # False: only runs already in bench/quality_runs; the others say why they are missing
    first_seed: int = 0  # seeds first_seed..seeds-1: another process can train the others at the same time


def over_seeds(name: str, label: str, plan: Plan, keys, compute) -> dict | None:
    """One row: the model's cached or (as the plan says) freshly computed rows for seeds 0..plan.seeds-1, averaged
    (None if none ran). `keys(seed)` are the run's cache keys, `compute(seed)` trains and scores it."""
    rows = [row for seed in range(plan.first_seed, plan.seeds)
            for row in cached(name, label, keys(seed), lambda seed=seed: compute(seed), plan.train_missing)]
    return mean_over_seeds(rows) if rows else None


def repeats_the_default(variant: Variant, chosen: RunConfig) -> bool:
    """Whether a variant of the log's pick changes nothing the pick has not already set (the default row)."""
    return variant.chosen_for_the_log and variant is not DEFAULT and all(
        getattr(section, key) == value
        for section, overrides in ((chosen.model, variant.model), (chosen.loss, variant.loss),
                                   (chosen.train, variant.train))
        for key, value in overrides.items())


def bench_dataset(name: str, plan: Plan, console) -> list[dict]:
    prepared = DATASET_CHOICES[name]()
    log = load_events(prepared.events, prepared.items)
    split = sample_cases(prepared.split(log), MAX_CASES)
    has_context = len(log.vocabs.contexts) > 2
    has_sessions = len(split.train.session_offsets) - 1 < len(split.train.session)
    loo_users = len(leave_one_out(split.train).cases) if prepared.protocol == "loo" else 0
    # what `recall train` picks for this log: the settings of the default rows
    chosen, choices = default_config(split.train, DEFAULT_BUDGET_S, pick_device("auto"), prepared.protocol)
    if any(variant.chosen_for_the_log for variant in plan.variants):
        console.print(f"[bold]{name}[/]: the default rows train")
        print_choices(console, choices)
    rows = []
    for result in evaluate(split, [PopularModel().fit(split.train), ContextPopularModel().fit(split.train)], KS):
        rows.append({"model": result.name, **result.overall})
    for variant in plan.variants:
        if (variant.needs_context and not has_context) or (variant.needs_sessions and not has_sessions):
            continue
        if variant.needs_sampled_loss and chosen.loss.retrieval == "softmax":
            continue
        if repeats_the_default(variant, chosen):
            continue
        needs_gpu = (variant.cpu_max_items is not None and log.n_items > variant.cpu_max_items
                     and not torch.cuda.is_available())

        def config_of(seed: int, variant=variant) -> RunConfig:
            if variant.chosen_for_the_log:
                train_settings = replace(chosen.train, seed=seed, **variant.train,
                                         patience=chosen.train.patience if plan.patience is None else plan.patience)
                if plan.epochs is not None:  # an A/B that machine speed and load do not change
                    train_settings = replace(train_settings, epochs=plan.epochs, time_budget_s=0.0)
                return replace(chosen, model=replace(chosen.model, **variant.model),
                               loss=replace(chosen.loss, **variant.loss), train=train_settings)
            return run_config(variant, plan.epochs or EPOCHS[name], seed, plan.patience or TUNED_PATIENCE,
                              TUNED_BUDGET_S.get(name, 0.0))

        def train_variant(seed: int, variant=variant) -> list[dict]:
            console.print(f"[bold]{name}[/]: training {variant.label} (seed {seed})")
            trained = train(split.train, config_of(seed), protocol=prepared.protocol)
            result = evaluate(split, [EncoderRecommender(trained.model, split.train, name=variant.label)], KS)[0]
            return [{"model": variant.label, **result.overall, "train_seconds": trained.seconds,
                     "sequences_per_second": trained.sequences_per_second, "epochs": len(trained.history),
                     "valid_ndcg@10": trained.metrics.get("ndcg@10")}]

        row = over_seeds(name, variant.label, replace(plan, train_missing=plan.train_missing and not needs_gpu),
                         lambda seed, config_of=config_of: code_keys(config_of(seed), loo_users),
                         train_variant)
        if row is None and needs_gpu:
            row = {"model": variant.label, "missing": f"needs a GPU for {log.n_items:,} items"}
            if plan.train_missing:
                console.print(f"{name}: {variant.label} not trained: it {row['missing']}")
        rows.append(row or {"model": variant.label, "missing": NOT_RUN})
    rectools_max_len = RECTOOLS_MAX_LEN.get(name, MAX_LEN)
    rectools_loss = RECTOOLS_LOSS.get(name, "softmax")
    # (the key names the loss only where it is not softmax, so the runs cached before it existed stay valid)
    loss_key = {} if rectools_loss == "softmax" else {"loss": rectools_loss}
    for model_name in plan.rectools:
        row = over_seeds(name, f"rectools-{model_name}", plan,
                         lambda seed: [{"epochs": plan.rectools_epochs, "seed": seed, "max_len": rectools_max_len,
                                        **loss_key}],
                         lambda seed, model_name=model_name: rectools_runner.evaluate_peer(
                             split, model_name, KS, plan.rectools_epochs, console, seed, rectools_max_len,
                             rectools_loss))
        if row is not None:
            rows.append(row)
        elif not plan.train_missing:  # (when training, None means RecTools could not be installed: no row)
            rows.append({"model": f"{rectools_runner.LABELS[model_name]} ({rectools_loss})", "missing": NOT_RUN})
    return rows


def ndcg_cell(row: dict) -> str:
    se = row.get("ndcg@10_se", 0.0)
    return f"{row['ndcg@10']:.4f}" + (f" ± {se:.4f}" if se else "")


COLUMNS = ("model", "Recall@10", "Recall@50", "Recall@100", "NDCG@10", "valid NDCG@10", "train s", "seq/s", "epochs")


def cells(row: dict) -> list[str]:
    """The row's cells under COLUMNS; a run not made says why."""
    if row.get("missing"):
        return [row["model"], row["missing"], *[""] * (len(COLUMNS) - 2)]
    validation = f"{row['valid_ndcg@10']:.4f}" if row.get("valid_ndcg@10") is not None else ""
    return [row["model"], *(f"{row[f'recall@{k}']:.4f}" for k in KS), ndcg_cell(row), validation,
            *(f"{row[key]:.0f}" if key in row else "" for key in ("train_seconds", "sequences_per_second", "epochs"))]


def print_table(console, name: str, rows: list[dict]) -> None:
    table = Table(title=f"{name}: recall quality")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "model" else "right")
    for row in rows:
        table.add_row(*cells(row))
    console.print(table)


def markdown(results: dict[str, list[dict]], command: str) -> str:
    lines = [f"Made by `{command}` on a 2-core CPU.", ""]
    for name, rows in results.items():
        lines += [f"### {name}", "", "| " + " | ".join(COLUMNS) + " |", "|---" + "|---:" * (len(COLUMNS) - 1) + "|"]
        lines += ["| " + " | ".join(cells(row)) + " |" for row in rows]
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6 * len(results), 5), squeeze=False)
    for axis, (name, rows) in zip(axes[0], results.items(), strict=True):
        rows = [row for row in rows if not row.get("missing")]
        labels = [row["model"] for row in rows]
        axis.barh(labels, [row["recall@50"] for row in rows], color="tab:blue")
        axis.invert_yaxis()
        axis.set_title(name)
        axis.set_xlabel("Recall@50")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="synthetic,movielens-100k,trivago")
    parser.add_argument("--epochs", type=int,
                        help="upper bound; early stopping ends runs sooner (default: per dataset, see EPOCHS); "
                             "the default rows then train without their time budget")
    parser.add_argument("--patience", type=int,
                        help="validations without improvement before early stopping (>= --epochs: none), for every "
                             "row; unset: 10 for the tuned rows, `recall train`'s own (20) for the default row")
    parser.add_argument("--quick", action="store_true", help="synthetic only, SASRec and TBGRecall, 5 epochs")
    parser.add_argument("--variants", help="comma-separated labels to train (default: all; '' for none)")
    parser.add_argument("--rectools", default="sasrec,hstu", help="RecTools models to run ('' for none)")
    parser.add_argument("--rectools-epochs", type=int, default=30,
                        help="RecTools trains this many epochs, without early stopping")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per trained model; rows hold their means")
    parser.add_argument("--first-seed", type=int, default=0,
                        help="start at this seed (run the others in another process; then all with --cached-only)")
    parser.add_argument("--cached-only", action="store_true",
                        help="train nothing: show the runs already in bench/quality_runs, the others as missing")
    args = parser.parse_args()
    console = make_console()
    datasets = ["synthetic"] if args.quick else args.datasets.split(",")
    variants = [SASREC, TBGRECALL] if args.quick else VARIANTS
    if args.variants is not None:
        wanted = {label for label in args.variants.split(",") if label}
        if unknown := wanted - {variant.label for variant in VARIANTS}:
            parser.error(f"--variants: no variant named {', '.join(sorted(unknown))}")
        variants = [variant for variant in variants if variant.label in wanted]
    epochs = 5 if args.quick else args.epochs
    rectools = [] if args.quick else [name for name in args.rectools.split(",") if name]
    plan = Plan(variants, epochs, args.patience, rectools, args.rectools_epochs, args.seeds,
                not args.cached_only, args.first_seed)
    results, started = {}, time.perf_counter()
    for name in datasets:
        results[name] = bench_dataset(name, plan, console)
        print_table(console, name, results[name])
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "quality.json").write_text(json.dumps(results, indent=2))
    command = "python bench/quality.py " + " ".join(sys.argv[1:])
    (RESULTS / "quality.md").write_text(markdown(results, command.strip()))
    plot(results, RESULTS / "quality.png")
    console.print(f"done in {time.perf_counter() - started:.0f} s; wrote {RESULTS}/quality.{{json,md,png}}")


if __name__ == "__main__":
    main()
