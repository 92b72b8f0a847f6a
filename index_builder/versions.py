"""Versioned index directories, published atomically, and verified before anyone searches them.

    INDEX_ROOT/
      CURRENT                      the name of the live version (replaced by rename: never half-written)
      versions/<version>/          index.faiss, id_map.npy (row -> item code), manifest.json
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
from index_builder.faiss_index import apply_params

INDEX_FILES = ("index.faiss", "id_map.npy")


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


def publish(root: str | Path, index: faiss.Index, id_map: np.ndarray, manifest: dict, keep: int = 3) -> str:
    """Write a new version beside the live one, then point CURRENT at it in one rename. Returns its name."""
    root = Path(root)
    versions = root / "versions"
    versions.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    version = f"{stamp}-{manifest['model_version'][:8]}"
    tmp = versions / f".{version}.tmp"
    tmp.mkdir()
    faiss.write_index(index, str(tmp / "index.faiss"))
    np.save(tmp / "id_map.npy", id_map.astype(np.int64))
    full = {**manifest, "index_version": version, "item_count": int(index.ntotal), "dim": int(index.d),
            "checksums": {name: sha256_file(tmp / name) for name in INDEX_FILES}}
    (tmp / "manifest.json").write_text(json.dumps(full, indent=2))
    for name in (*INDEX_FILES, "manifest.json"):
        _fsync_file(tmp / name)
    os.replace(tmp, versions / version)
    pointer = root / "CURRENT.tmp"
    pointer.write_text(version)
    _fsync_file(pointer)
    os.replace(pointer, root / "CURRENT")
    _prune(versions, keep, live=version)
    return version


def _prune(versions: Path, keep: int, live: str) -> None:
    names = sorted(p.name for p in versions.iterdir() if p.is_dir() and not p.name.startswith("."))
    for name in names[:-keep] if keep > 0 else []:
        if name != live:
            shutil.rmtree(versions / name, ignore_errors=True)


def current_version(root: str | Path) -> str | None:
    try:
        return (Path(root) / "CURRENT").read_text().strip() or None
    except FileNotFoundError:
        return None


def open_version(root: str | Path, version: str | None = None, model_version: str | None = None,
                 dim: int | None = None) -> LoadedIndex:
    """Load and verify a version (default: CURRENT): checksums, dimension, model version, row count.

    Reading CURRENT races with publishers that prune old versions: when the version being read vanishes and
    CURRENT has moved on meanwhile, the new CURRENT is read instead.
    """
    root = Path(root)
    if version is not None:
        return _open(root, version, model_version, dim)
    for _ in range(5):
        version = current_version(root)
        if version is None:
            raise IndexRejected(f"{root}: no CURRENT index published")
        try:
            return _open(root, version, model_version, dim)
        except IndexRejected:
            if current_version(root) == version:
                raise
    raise IndexRejected(f"{root}: CURRENT kept changing while it was read")


def verified_manifest(root: str | Path, version: str) -> dict:
    """The manifest of a version whose files all match their checksums (what a worker, which encodes but never
    searches, checks: it refuses the same versions the API does)."""
    directory = Path(root) / "versions" / version
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError) as error:
        raise IndexRejected(f"{directory}: unreadable manifest ({error})") from None
    bad = first_mismatch(directory, INDEX_FILES, manifest["checksums"])
    if bad:
        raise IndexRejected(f"{directory}: {bad} is missing or its checksum does not match the manifest")
    return manifest


def _open(root: Path, version: str, model_version: str | None, dim: int | None) -> LoadedIndex:
    directory = root / "versions" / version
    manifest = verified_manifest(root, version)
    if model_version is not None and manifest["model_version"] != model_version:
        raise IndexRejected(f"{directory}: built for model {manifest['model_version']}, the encoder is "
                            f"{model_version}: vectors from two models must not be mixed")
    if dim is not None and manifest["dim"] != dim:
        raise IndexRejected(f"{directory}: dimension {manifest['dim']}, the encoder gives {dim}")
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
