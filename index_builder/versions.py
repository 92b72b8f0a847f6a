"""Self-contained versions, published atomically, verified before anyone serves them, and rolled back by pointer.

    INDEX_ROOT/
      CURRENT                      the name of the live version (replaced by rename: never half-written)
      versions/<version>/          everything the service needs, nothing it must find elsewhere:
        index.faiss, id_map.npy    the index and each row's item code
        user_encoder.onnx          the model the index's vectors came from (and query_step.onnx, when it has one),
        vocabularies.json          its id <-> code maps
        item_side.npz              and each item's category and seller (filters)
        content_tower.onnx         an item's content -> its vector (items added live); with text_encoder.onnx and
                                   tokenizer.json when the tower reads text. Versions exported before have none.
        manifest.json              the index's figures, the export's manifest ("model"), every file's checksum

A version never points outside itself, so a rebuild cannot break a kept version, and the root can be mounted
anywhere (compose, Kubernetes) without rewriting it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import faiss
import numpy as np

from contract.file_io import first_mismatch, sha256_file
from contract.manifests import CONTENT_TOWER_FILE, QUERY_STEP_FILE, TEXT_FILES
from index_builder.faiss_index import apply_params

INDEX_FILES = ("index.faiss", "id_map.npy")
MODEL_FILES = ("user_encoder.onnx", "vocabularies.json", "item_side.npz")  # copied from the export
VERSION_FILES = INDEX_FILES + MODEL_FILES


def version_files(model_manifest: dict) -> tuple[str, ...]:
    """Every file a version of this model holds and checksums."""
    if not isinstance(model_manifest, dict):
        return VERSION_FILES
    content = model_manifest.get("content")
    return (VERSION_FILES + ((QUERY_STEP_FILE,) if model_manifest.get("query_step") else ())
            + ((CONTENT_TOWER_FILE,) if isinstance(content, dict) else ())
            + (TEXT_FILES if isinstance(content, dict) and content.get("text_encoder") else ()))


class IndexRejected(ValueError):
    """An index that must not serve: missing, corrupt, or built for another model or dimension."""


@dataclass
class LoadedIndex:
    version: str
    index: faiss.Index
    id_map: np.ndarray  # (n,) item code of each index row
    manifest: dict


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def publish(root: str | Path, index: faiss.Index, id_map: np.ndarray, manifest: dict, artifacts: Path,
            keep: int = 3) -> str:
    """Write a new version (the index and the export's model files) beside the live one, then point CURRENT at
    it in one rename. Returns its name."""
    root = Path(root)
    versions = root / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    version = f"{stamp}-{manifest['model_version'][:8]}"
    tmp = versions / f".{version}.tmp"
    tmp.mkdir()
    faiss.write_index(index, str(tmp / "index.faiss"))
    np.save(tmp / "id_map.npy", id_map.astype(np.int64))
    files = version_files(manifest["model"])
    for name in files[len(INDEX_FILES):]:
        shutil.copyfile(artifacts / name, tmp / name)
    full = {**manifest, "index_version": version, "item_count": int(index.ntotal), "dim": int(index.d),
            "checksums": {name: sha256_file(tmp / name) for name in files}}
    (tmp / "manifest.json").write_text(json.dumps(full, indent=2))
    for name in (*files, "manifest.json"):
        _fsync_file(tmp / name)
    os.replace(tmp, versions / version)
    _point_current(root, version)
    _prune(versions, keep, live=version)
    return version


def _point_current(root: Path, version: str) -> None:
    pointer = root / "CURRENT.tmp"
    pointer.write_text(version)
    _fsync_file(pointer)
    os.replace(pointer, root / "CURRENT")


def kept_versions(root: str | Path) -> list[str]:
    """The published versions still on disk, oldest first (names start with their UTC publish time)."""
    versions = Path(root) / "versions"
    if not versions.is_dir():
        return []
    return sorted(p.name for p in versions.iterdir() if p.is_dir() and not p.name.startswith("."))


@dataclass
class VersionSummary:
    version: str
    live: bool
    model_version: str
    parent: str | None  # the model it was warm-started from: a kept version's model version, else the run path
    created_at: str
    recall: dict
    gate: dict | None  # `recall publish --gate-events` figures, when it was gated
    problem: str | None  # why the service would refuse it, when it would


def version_summaries(root: str | Path) -> list[VersionSummary]:
    """Every kept version, oldest first, with what an operator picks a rollback target by."""
    root = Path(root)
    live = current_version(root)
    manifests: dict[str, dict] = {}
    problems: dict[str, str | None] = {}
    for name in kept_versions(root):
        try:
            manifests[name], problems[name] = verified_manifest(root, name), None
        except IndexRejected as error:
            problems[name] = str(error)
            try:
                manifests[name] = json.loads((root / "versions" / name / "manifest.json").read_text())
            except (OSError, ValueError):
                manifests[name] = {}
    model_of_run = {m["model"]["run"]: m["model"]["model_version"] for m in manifests.values()
                    if isinstance(m.get("model"), dict) and "run" in m["model"]}
    summaries = []
    for name, manifest in manifests.items():
        parent_run = (manifest.get("model") or {}).get("parent_run")
        summaries.append(VersionSummary(
            version=name, live=name == live, model_version=manifest.get("model_version", "?"),
            parent=model_of_run.get(parent_run, parent_run), created_at=manifest.get("created_at", "?"),
            recall=manifest.get("recall", {}), gate=manifest.get("gate"), problem=problems[name]))
    return summaries


def rollback(root: str | Path, to: str | None = None) -> str:
    """Point CURRENT at `to`, by default the newest kept version published before the live one, once its files
    match their checksums. Returns the version now live; IndexRejected when there is none to go back to."""
    root = Path(root)
    kept, live = kept_versions(root), current_version(root)
    if to is None:
        older = [name for name in kept if live is None or name < live]
        if not older:
            raise IndexRejected(f"{root}: no kept version older than the live one ({live}) to roll back to")
        to = older[-1]
    elif to not in kept:
        raise IndexRejected(f"{root}: no kept version {to} (kept: {', '.join(kept) or 'none'})")
    verified_manifest(root, to)
    _point_current(root, to)
    return to


def _prune(versions: Path, keep: int, live: str) -> None:
    names = kept_versions(versions.parent)
    for name in names[:-keep] if keep > 0 else []:
        if name != live:
            shutil.rmtree(versions / name, ignore_errors=True)


def current_version(root: str | Path) -> str | None:
    try:
        return (Path(root) / "CURRENT").read_text().strip() or None
    except FileNotFoundError:
        return None


def open_version(root: str | Path, version: str | None = None) -> LoadedIndex:
    """Load and verify a version (default: CURRENT): checksums, one model for index and encoder, dimension,
    row count.

    Reading CURRENT races with publishers that prune old versions: when the version being read vanishes and
    CURRENT has moved on meanwhile, the new CURRENT is read instead.
    """
    root = Path(root)
    if version is not None:
        return _open(root, version)
    for _ in range(5):
        version = current_version(root)
        if version is None:
            raise IndexRejected(f"{root}: no CURRENT index published")
        try:
            return _open(root, version)
        except IndexRejected:
            if current_version(root) == version:
                raise
    raise IndexRejected(f"{root}: CURRENT kept changing while it was read")


def verified_manifest(root: str | Path, version: str) -> dict:
    """The manifest of a version whose files all match their checksums and whose index and encoder come from one
    model (what a worker, which encodes but never searches, checks: it refuses the same versions the API does)."""
    directory = Path(root) / "versions" / version
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError) as error:
        raise IndexRejected(f"{directory}: unreadable manifest ({error})") from None
    if not isinstance(manifest, dict) or "model" not in manifest:
        raise IndexRejected(f"{directory}: not a self-contained version (published by an older release, whose "
                            f"model files lived outside it): rebuild it with `recall build-index`")
    bad = first_mismatch(directory, version_files(manifest["model"]), manifest.get("checksums", {}))
    if bad:
        raise IndexRejected(f"{directory}: {bad} is missing or its checksum does not match the manifest")
    model = manifest["model"]
    if model["model_version"] != manifest["model_version"]:
        raise IndexRejected(f"{directory}: the encoder is model {model['model_version']}, the index was built for "
                            f"{manifest['model_version']}: vectors from two models must not be mixed")
    if model["dim"] != manifest["dim"]:
        raise IndexRejected(f"{directory}: dimension {manifest['dim']}, the encoder gives {model['dim']}")
    return manifest


def _open(root: Path, version: str) -> LoadedIndex:
    directory = root / "versions" / version
    manifest = verified_manifest(root, version)
    try:
        index = faiss.read_index(str(directory / "index.faiss"))
        id_map = np.load(directory / "id_map.npy", allow_pickle=False)
    except (RuntimeError, OSError, ValueError) as error:
        raise IndexRejected(f"{directory}: cannot read the index ({error})") from None
    if index.ntotal != manifest["item_count"] or len(id_map) != index.ntotal or index.d != manifest["dim"]:
        raise IndexRejected(f"{directory}: the index holds {index.ntotal} x {index.d}, the manifest says "
                            f"{manifest['item_count']} x {manifest['dim']}")
    apply_params(index, manifest.get("search_params", {}))
    return LoadedIndex(version=version, index=index, id_map=id_map, manifest=manifest)
