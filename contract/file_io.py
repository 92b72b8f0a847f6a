"""File helpers every stage shares: content checksums and replacing a directory in one rename."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def first_mismatch(directory: Path, names: tuple[str, ...], checksums: dict[str, str]) -> str | None:
    """The first of `names` under `directory` that is missing or differs from its recorded checksum."""
    for name in names:
        try:
            if sha256_file(directory / name) == checksums.get(name):
                continue
        except OSError:
            pass
        return name
    return None


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished `tmp` to `out` by rename: readers see the old directory or the new one, never a mix."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
