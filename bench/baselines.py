"""Popularity baselines on every development dataset: the first rows of every later comparison.

    python bench/baselines.py [--datasets synthetic,trivago,movielens-100k,diginetica,yoochoose] [--max-cases N]

Prints one table per dataset and a summary, and writes bench/results/baselines.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rich.table import Table

from bench.datasets import DATASETS
from cli.console import make_console
from contract.events import load_events
from evaluation.evaluate import evaluate, print_results
from evaluation.popularity import ContextPopularModel, PopularModel
from evaluation.splits import sample_cases

KS = [10, 50, 100]
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--max-cases", type=int, default=20_000, help="evaluate a fixed sample of this many users")
    args = parser.parse_args()
    console = make_console()
    summary: dict[str, dict] = {}
    for name in args.datasets.split(","):
        with console.status(f"preparing {name}"):
            prepared = DATASETS[name]()
            log = load_events(prepared.events, prepared.items)
            split = sample_cases(prepared.split(log), args.max_cases)
            protocol = prepared.protocol + (" + cold users" if prepared.include_cold_users else "")
            models = [PopularModel().fit(split.train), ContextPopularModel().fit(split.train)]
            results = evaluate(split, models, KS)
        print_results(console, split, results, KS, title=f"{name}: {protocol}, {len(split.cases):,} cases")
        summary[name] = {"protocol": protocol, "cases": len(split.cases),
                         **{r.name: r.overall for r in results}}
    table = Table(title="Popularity baselines: Recall@10 / Recall@50 / NDCG@10")
    for column in ("dataset", "protocol", "cases", "popular", "context-popular"):
        table.add_column(column, justify="left" if column in ("dataset", "protocol") else "right")
    lines = ["| dataset | protocol | cases | popular R@10 / R@50 / NDCG@10 | context-popular R@10 / R@50 / NDCG@10 |",
             "|---|---|---:|---:|---:|"]
    for name, row in summary.items():
        cells = [_triple(row[m]) for m in ("popular", "context-popular")]
        table.add_row(name, row["protocol"], f"{row['cases']:,}", *cells)
        lines.append(f"| {name} | {row['protocol']} | {row['cases']:,} | {cells[0]} | {cells[1]} |")
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "baselines.json").write_text(json.dumps(summary, indent=2))
    (RESULTS / "baselines.md").write_text("\n".join(lines) + "\n")


def _triple(metrics: dict[str, float]) -> str:
    return f"{metrics['recall@10']:.4f} / {metrics['recall@50']:.4f} / {metrics['ndcg@10']:.4f}"


if __name__ == "__main__":
    main()
