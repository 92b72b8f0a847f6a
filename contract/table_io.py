"""Reading a CSV or Parquet table, with the contract's errors for empty files and missing columns."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from contract.errors import DataError

PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz")


def read_table(path: str | Path, required: tuple[str, ...]) -> pd.DataFrame:
    """The whole table as a DataFrame; `DataError` for a missing, empty or unreadable file or missing columns.

    A directory is one table: every Parquet file under it, recursively (an archive partitioned by date and hour),
    in path order. `frame.attrs["parts"]` then lists (file, rows) so a bad row can be named in its own file."""
    path = Path(path)
    name = str(path)
    if path.is_dir():
        return _read_directory(path, required)
    if not path.is_file():
        raise DataError(name, "file not found")
    if path.stat().st_size == 0:
        raise DataError(name, "file is empty")
    frame = _read(path, name)
    missing = [column for column in required if column not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns)) or "none"
        raise DataError(name, f"missing required column (found: {found})", column=missing[0])
    if len(frame) == 0:
        raise DataError(name, "file has a header but no rows")
    return frame


def parquet_files(directory: Path) -> list[Path]:
    """The Parquet files a directory holds as one log, recursively, in path order; hidden ones (a writer's
    temporary files) are left out."""
    files = sorted(p for p in directory.rglob("*") if p.suffix in PARQUET_SUFFIXES and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(directory).parts))
    if not files:
        raise DataError(str(directory), "directory holds no Parquet files (*.parquet, *.pq)")
    return files


def _read_directory(directory: Path, required: tuple[str, ...]) -> pd.DataFrame:
    files = parquet_files(directory)
    frames = [read_table(file, required) for file in files]
    frame = pd.concat(frames, ignore_index=True)
    frame.attrs["parts"] = [(str(file), len(part)) for file, part in zip(files, frames, strict=True)]
    return frame


def part_of_row(frame: pd.DataFrame, path: str, row: int) -> tuple[str, int]:
    """(file, 1-based row in it) of a 1-based row of a table `read_table` read from `path` (a file or directory)."""
    for file, rows in frame.attrs.get("parts", []):
        if row <= rows:
            return file, row
        row -= rows
    return path, row


def _read(path: Path, name: str) -> pd.DataFrame:
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    try:
        if suffix in PARQUET_SUFFIXES:
            return pq.read_table(path).to_pandas()
        if suffix in CSV_SUFFIXES:
            separator = "\t" if suffix.startswith(".tsv") else ","
            return pd.read_csv(path, sep=separator, engine="pyarrow")
    except (pa.ArrowInvalid, pa.ArrowException, pd.errors.ParserError, pd.errors.EmptyDataError, OSError,
            UnicodeDecodeError) as error:
        raise DataError(name, f"cannot read: {_first_line(error)}") from None
    raise DataError(name, f"unsupported file type '{suffix}' (expected .csv, .csv.gz, .tsv or .parquet)")


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def write_table(frame: pd.DataFrame, path: str | Path) -> None:
    """Write a table as Parquet or CSV by its suffix, through a temporary file so a reader never sees half of it.
    The temporary name is the writer's own: two processes writing one path (two benchmarks preparing one cached
    dataset) each rename a whole file, and the last one wins."""
    path = Path(path)
    tmp_path = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        if path.suffix in PARQUET_SUFFIXES:
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), tmp_path)
        else:
            frame.to_csv(tmp_path, index=False)
        tmp_path.replace(path)
    finally:
        tmp_path.unlink(missing_ok=True)  # after a failed write; after the rename there is nothing left
