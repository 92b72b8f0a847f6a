"""`recall export` and `recall build-index`: a training run -> ONNX artifacts -> a published FAISS index."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from cli.console import make_console, step_progress

REFUSED = 1
GATE_REFUSED = 3


def register(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser("export", help="export a run to ONNX artifacts (with a parity check)")
    export.add_argument("--run", required=True, type=Path, help="a run directory written by recall train")
    export.add_argument("--out", required=True, type=Path, help="artifact directory to write")
    export.set_defaults(handler=run_export)
    build = commands.add_parser("build-index", help="build, check and publish a FAISS index of the item vectors")
    build.add_argument("--artifacts", required=True, type=Path, help="a directory written by recall export")
    build.add_argument("--out", required=True, type=Path, help="index root (versions/ and CURRENT)")
    build.add_argument("--type", dest="kind", choices=("auto", "flat", "ivf", "hnsw"), default="auto",
                       help="auto: flat up to 200k items, IVF above")
    build.add_argument("--factory", help='a faiss index_factory string, such as "IVF4096,PQ32" (overrides --type)')
    build.add_argument("--recall-floor", type=float, default=0.95, help="refuse to publish below this recall@k")
    build.add_argument("--k", type=int, default=100, help="the k the recall floor is measured at")
    build.add_argument("--keep", type=int, default=3, help="versions to keep")
    build.add_argument("--gpu", choices=("auto", "yes", "no"), default="auto",
                       help="build on a GPU (auto: when visible)")
    build.set_defaults(handler=run_build_index)
    publish = commands.add_parser("publish", help="export a run, build its index, gate it against the live "
                                                  "version and publish it, in one step")
    publish.add_argument("--run", required=True, type=Path, help="a run directory written by recall train")
    publish.add_argument("--index", required=True, type=Path, help="index root")
    publish.add_argument("--gate-events", type=Path, help="recent events (file or Parquet directory) to score the "
                                                          "candidate and the live version on; unset: no gate")
    publish.add_argument("--gate-tolerance", type=float, default=0.02,
                         help="refuse (exit 3) below (1 - tolerance) x the live version's NDCG@10")
    publish.add_argument("--type", dest="kind", choices=("auto", "flat", "ivf", "hnsw"), default="auto",
                         help="index kind; auto: flat for small catalogues, IVF beyond")
    publish.add_argument("--factory", help="a faiss index_factory string (overrides --type)")
    publish.add_argument("--recall-floor", type=float, default=0.95,
                         help="the search parameters are tuned to reach this recall of the exact top-k")
    publish.add_argument("--keep", type=int, default=3, help="versions to keep")
    publish.set_defaults(handler=run_publish)
    rollback = commands.add_parser("rollback", help="serve an earlier kept version (the running service swaps)")
    rollback.add_argument("--index", required=True, type=Path, help="index root")
    rollback.add_argument("--to", help="the version to serve (default: the one published before the live one)")
    rollback.set_defaults(handler=run_rollback)
    versions = commands.add_parser("versions", help="list the kept versions of an index root")
    versions.add_argument("--index", required=True, type=Path, help="index root")
    versions.add_argument("--json", action="store_true", help="print JSON instead of a table")
    versions.set_defaults(handler=run_versions)


def run_export(args: argparse.Namespace) -> int:
    """Write user_encoder.onnx, item_tower.onnx, the catalogue's vectors and manifest.json into --out."""
    from model_export.export import export_run
    from model_export.onnx_export import ParityError

    console = make_console()
    with step_progress(console, f"exporting {args.run}") as on_step:
        try:
            manifest = export_run(args.run, args.out, on_step)
        except ParityError as error:
            console.print(f"[red]export refused: {error}")
            return REFUSED
    console.print(f"wrote {args.out}: model {manifest['model_version']} ({manifest['encoder']}, d={manifest['dim']}, "
                  f"{manifest['n_items'] - 1:,} items), parity {manifest['parity_max_abs_diff']:.1e}")
    return 0


def run_build_index(args: argparse.Namespace) -> int:
    """Build the index, measure recall@k against exact search, publish it as the new CURRENT version."""
    from contract.errors import DataError
    from index_builder.build import RecallTooLow, build_and_publish
    from index_builder.faiss_index import BadFactory

    if not (args.artifacts / "manifest.json").is_file():
        raise DataError(str(args.artifacts), "not an artifact directory (run `recall export` first)")
    console = make_console()
    use_gpu = {"auto": None, "yes": True, "no": False}[args.gpu]
    with step_progress(console, "index") as on_step:
        try:
            report = build_and_publish(args.artifacts, args.out, args.kind, args.recall_floor, args.k, args.keep,
                                       use_gpu, args.factory, on_step=on_step)
        except BadFactory as error:
            raise DataError("--factory", str(error)) from None
        except RecallTooLow as error:
            console.print(f"[red]{error}")
            return REFUSED
    manifest = report.manifest
    console.print(f"published {args.out}/versions/{report.version}: {index_summary(manifest)}")
    return 0


def run_publish(args: argparse.Namespace) -> int:
    """Export, build, gate and publish; exit 3 when the gate refuses, 1 when export parity or index recall does."""
    from contract.errors import DataError

    if not 0 <= args.gate_tolerance < 1:
        raise DataError("--gate-tolerance", f"must be in [0, 1), got {args.gate_tolerance}")
    return publish_run(args.run, args.index, args.gate_events, args.gate_tolerance, kind=args.kind,
                       factory=args.factory, recall_floor=args.recall_floor, keep=args.keep)


def publish_run(run: Path, index: Path, gate_events: Path | None, gate_tolerance: float, kind: str = "auto",
                factory: str | None = None, recall_floor: float = 0.95, keep: int = 3) -> int:
    """Export into a scratch directory, then build, gate and publish: a refused candidate leaves the root as it
    was, and the version holds every file it needs, so the scratch export is dropped. Returns the exit code."""
    import tempfile

    from contract.errors import DataError
    from index_builder.build import RecallTooLow, build_and_publish
    from index_builder.faiss_index import BadFactory
    from index_builder.gate import GateRefused
    from model_export.export import export_run
    from model_export.onnx_export import ParityError

    console = make_console()
    with tempfile.TemporaryDirectory(prefix="recall-publish-") as scratch:
        artifacts = Path(scratch) / "artifacts"
        try:
            with step_progress(console, f"exporting {run}") as on_step:
                export_run(run, artifacts, on_step)
            with step_progress(console, "index") as on_step:
                report = build_and_publish(artifacts, index, kind, recall_floor, keep=keep, factory=factory,
                                           gate_events=gate_events, gate_tolerance=gate_tolerance, on_step=on_step)
        except BadFactory as error:
            raise DataError("--factory", str(error)) from None
        except GateRefused as error:
            console.print(f"[red]{error}")
            return GATE_REFUSED
        except (ParityError, RecallTooLow) as error:
            console.print(f"[red]{error}")
            return REFUSED
    manifest, gate = report.manifest, report.manifest["gate"]
    gated = "" if gate is None else (f"; gate NDCG@10 {gate['candidate']:.4f} against live {gate['live']:.4f}"
                                     if gate["live"] is not None else "; gate passed (no live version)")
    console.print(f"published {index}/versions/{report.version}: model {manifest['model_version']}, "
                  f"{index_summary(manifest)}{gated}")
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    """Point CURRENT at a kept version after checking its files; the service hot-swaps to it within a second."""
    from contract.errors import DataError
    from index_builder.versions import IndexRejected, current_version, rollback

    before = current_version(args.index)
    try:
        version = rollback(args.index, args.to)
    except IndexRejected as error:
        raise DataError("--to" if args.to else str(args.index), str(error)) from None
    make_console().print(f"{args.index}: CURRENT {before} -> {version}")
    return 0


def index_summary(manifest: dict) -> str:
    """One line a person reads: the index, its tuned search parameters, where it was built, its recall."""
    params = " ".join(f"{name}={value}" for name, value in manifest["search_params"].items())
    recall = ", ".join(f"{name} {value:.3f}" for name, value in manifest["recall"].items())
    return (f"{manifest['factory']}{f' ({params})' if params else ''} on {manifest['built_on']}, {recall}, "
            f"built in {manifest['build_seconds']:.1f} s")


def run_versions(args: argparse.Namespace) -> int:
    """One row per kept version: what it serves, what it came from, how good its index and gate figures are."""
    from rich.table import Table

    from contract.errors import DataError
    from index_builder.versions import version_summaries

    summaries = version_summaries(args.index)
    if not summaries:
        raise DataError(str(args.index), "no published versions (run `recall build-index --out` first)")
    if args.json:
        print(json.dumps([dataclasses.asdict(summary) for summary in summaries], indent=2))  # noqa: T201
        return 0
    table = Table("", "version", "model", "parent", "created", "recall", "gate")
    for summary in summaries:
        recall = ", ".join(f"{name} {value:.3f}" for name, value in summary.recall.items())
        gate = "-" if summary.gate is None else ("passed" if summary.gate.get("passed") else "refused")
        table.add_row("live" if summary.live else "", summary.version, summary.model_version,
                      summary.parent or "-", summary.created_at, recall,
                      gate if summary.problem is None else f"[red]unservable: {summary.problem}")
    make_console().print(table)
    return 0
