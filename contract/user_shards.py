"""Logs larger than memory: one streaming pass splits a Parquet log into shards of whole users, and training then
reads one shard at a time.

The pass reads the log (a Parquet file, or a directory of them such as the service's archive) in record batches
through pyarrow datasets. It validates every batch as `load_events` validates a file, naming the file and row of a
bad value. It grows the shared vocabularies (items, contexts, scenarios) and appends each row to the shard of its
user's hash, so each user's events arrive together. Peak memory is one record batch plus the vocabularies, and a
shard's, when it is loaded: not the log's. Users get codes per shard (the model has no user embedding), so the
vocabulary of users, which grows with the log, is never held whole. The one check the pass cannot make in bounded
memory is that `event_id`s are unique over the whole log (the service deduplicates them as they arrive).

A shard directory holds `manifest.json`, `vocabularies.json`, `item_events.npy` and `shard-NNNNN.parquet`. In a
multi-node job it must be on storage every node reads.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from contract.columns import COLUMN_ALIASES, Columns
from contract.errors import DataError
from contract.events import (
    EventLog,
    ItemTable,
    _check_not_null,
    _check_unique,
    _encode_optional,
    _item_table,
    _parse_actions,
    _parse_timestamps,
    _warn_unknown,
    sessionize,
)
from contract.table_io import PARQUET_SUFFIXES, parquet_files, read_table
from contract.vocab import Vocabularies, Vocabulary

BATCH_ROWS = 1 << 20


def user_hash(user_ids: pd.Series | np.ndarray) -> np.ndarray:
    """(n,) uint64 hash of user ids as text: the same in every process and on every machine (no PYTHONHASHSEED),
    so a user's events land in one shard and a user is trained on by one rank."""
    return pd.util.hash_array(np.asarray(pd.Series(user_ids).astype(str), dtype=object))


def is_streamable(path: str | Path) -> bool:
    """Parquet (one file or a directory of them) can be read in batches; CSV is read whole."""
    path = Path(path)
    return path.is_dir() or path.suffix in PARQUET_SUFFIXES


def count_rows(path: str | Path) -> int:
    """Rows of a Parquet log from the files' footers, without reading the data."""
    return sum(_footer_rows(file) for file in log_files(Path(path)))


def log_files(path: Path) -> list[Path]:
    """The files of a Parquet log: the file itself, or what `read_table` reads of a directory, in its order."""
    if path.is_dir():
        return parquet_files(path)
    if not path.is_file():
        raise DataError(str(path), "file not found")
    return [path]


@dataclass
class UserShards:
    """A log split into shards of whole users on disk; `load(i)` is shard i as an `EventLog`."""

    directory: Path
    n_shards: int
    events: int
    vocabs: Vocabularies  # shared by every shard; `users` stays empty (codes are per shard)
    items_path: Path | None
    item_events: np.ndarray  # (n_items,) events per item code in the whole log
    has_timestamp: bool
    has_session_id: bool
    max_timestamp: int
    session_gap_s: int
    source: str

    def load(self, shard: int) -> EventLog:
        path = self.directory / f"shard-{shard:05d}.parquet"
        frame = pq.read_table(path).to_pandas()
        if not self.has_session_id:
            frame = frame.drop(columns=Columns.session)
        vocabs = replace(self.vocabs, users=Vocabulary("users"))
        user = vocabs.users.encode(frame[Columns.user])
        timestamp = frame[Columns.timestamp].to_numpy(np.int64)
        order, session = sessionize(frame, user, timestamp, self.has_timestamp, self.session_gap_s, str(path))
        return EventLog(
            user=user[order], item=frame[Columns.item].to_numpy(np.int32)[order],
            action=frame[Columns.action].to_numpy(np.int8)[order], timestamp=timestamp[order], session=session,
            context=frame[Columns.context].to_numpy(np.int32)[order],
            scenario=frame[Columns.scenario].to_numpy(np.int32)[order], vocabs=vocabs, items=self.items,
            has_timestamp=self.has_timestamp, has_session_id=self.has_session_id, source=self.source)

    @cached_property
    def items(self) -> ItemTable:
        """Side information by item code, read once for all shards."""
        frame = read_table(self.items_path, Columns.items_required) if self.items_path else None
        return _item_table(frame, self.vocabs, grow=False)

    @classmethod
    def open(cls, directory: str | Path) -> UserShards:
        directory = Path(directory)
        manifest = json.loads((directory / "manifest.json").read_text())
        items_path = manifest.pop("items_path")
        return cls(directory=directory, vocabs=Vocabularies.load(directory / "vocabularies.json"),
                   item_events=np.load(directory / "item_events.npy", allow_pickle=False),
                   items_path=Path(items_path) if items_path else None, **manifest)


def write_user_shards(events_path: str | Path, items_path: str | Path | None, directory: str | Path,
                      shard_events: int, session_gap_s: int, vocabs: Vocabularies | None = None,
                      show_progress: bool = True) -> UserShards:
    """One pass over a Parquet log: validate it, grow `vocabs`, and write shards of about `shard_events` events
    each (by user hash) into `directory`. Raises `DataError` naming the file, row and column of a bad value."""
    events_path, directory = Path(events_path), Path(directory)
    vocabs = vocabs if vocabs is not None else Vocabularies()
    item_frame = read_table(items_path, Columns.items_required) if items_path is not None else None
    if item_frame is not None:
        _check_unique(item_frame, Columns.item, str(items_path))
        vocabs.items.encode(item_frame[Columns.item])
    files = log_files(events_path)
    events = sum(_footer_rows(file) for file in files)
    if events == 0:
        raise DataError(str(events_path), "the log has no rows")
    dataset = ds.dataset([str(file) for file in files], format="parquet")
    n_shards = max(1, math.ceil(events / shard_events))
    directory.mkdir(parents=True, exist_ok=True)
    writers: dict[int, pq.ParquetWriter] = {}
    item_events = np.zeros(0, dtype=np.int64)
    columns_seen: dict[str, tuple[str, bool]] = {}
    max_timestamp = 0
    bar = tqdm(total=events, desc="sharding users", unit="event", disable=None if show_progress else True)
    try:
        rows_of_log_before = 0
        for fragment in dataset.get_fragments():  # in the order of `files`
            rows_before = 0
            for batch in fragment.to_batches(batch_size=BATCH_ROWS):
                if batch.num_rows == 0:
                    continue
                frame = _validated(batch.to_pandas(), fragment.path, rows_before, rows_of_log_before, vocabs,
                                   columns_seen)
                rows_before += len(frame)
                rows_of_log_before += len(frame)
                item_events = _add_counts(item_events, frame[Columns.item].to_numpy())
                max_timestamp = max(max_timestamp, int(frame[Columns.timestamp].max()))
                shard_of_row = user_hash(frame[Columns.user]) % np.uint64(n_shards)
                for shard in np.unique(shard_of_row):
                    part = pa.Table.from_pandas(frame[shard_of_row == shard], schema=SHARD_SCHEMA,
                                                preserve_index=False)
                    if shard not in writers:
                        writers[shard] = pq.ParquetWriter(directory / f"shard-{shard:05d}.parquet", SHARD_SCHEMA)
                    writers[shard].write_table(part)
                bar.update(len(frame))
    finally:
        bar.close()
        for writer in writers.values():
            writer.close()
    for shard in set(range(n_shards)) - set(writers):  # a shard no user hashed to: an empty file, not a gap
        pq.write_table(SHARD_SCHEMA.empty_table(), directory / f"shard-{shard:05d}.parquet")
    _item_table(item_frame, vocabs, grow=True)  # grows the category and seller vocabularies that shards read
    vocabs.save(directory / "vocabularies.json")
    np.save(directory / "item_events.npy", np.pad(item_events, (0, len(vocabs.items) - len(item_events))))
    has_timestamp, has_session_id = (columns_seen[name][1] for name in (Columns.timestamp, Columns.session))
    manifest = {"n_shards": n_shards, "events": events, "has_timestamp": has_timestamp,
                "has_session_id": has_session_id, "max_timestamp": max_timestamp if has_timestamp else 0,
                "session_gap_s": session_gap_s, "source": str(events_path),
                "items_path": str(items_path) if items_path else None}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return UserShards.open(directory)


SHARD_SCHEMA = pa.schema([
    (Columns.user, pa.string()), (Columns.item, pa.int32()), (Columns.action, pa.int8()),
    (Columns.timestamp, pa.int64()), (Columns.context, pa.int32()), (Columns.scenario, pa.int32()),
    (Columns.session, pa.string()),
])


def _footer_rows(file: Path) -> int:
    if file.stat().st_size == 0:
        raise DataError(str(file), "file is empty")
    try:
        return pq.ParquetFile(file).metadata.num_rows
    except (pa.ArrowInvalid, OSError) as error:
        raise DataError(str(file), f"cannot read: {str(error).strip().splitlines()[0]}") from None


def _validated(frame: pd.DataFrame, file: str, rows_before: int, rows_of_log_before: int, vocabs: Vocabularies,
               columns_seen: dict[str, tuple[str, bool]]) -> pd.DataFrame:
    """One record batch in the shard schema (item, context and scenario codes; parsed actions and times), checked
    as `load_events` checks a file; errors name the row within `file`. Without timestamps a row's time is its
    position in the log, as `load_events` orders such a file."""
    frame = frame.rename(columns={alias: name for alias, name in COLUMN_ALIASES.items()
                                  if alias in frame and name not in frame})
    for column in Columns.events_required:
        if column not in frame:
            raise DataError(file, f"missing required column (found: {', '.join(map(str, frame.columns))})",
                            column=column)
    for column in (Columns.timestamp, Columns.session):
        # Every file must agree on the optional columns that decide how sessions are cut.
        first_file, had = columns_seen.setdefault(column, (file, column in frame))
        if had != (column in frame):
            raise DataError(file, f"column {column} is {'missing' if had else 'present'} here but "
                            f"{'present' if had else 'missing'} in {first_file}: every file of a log needs the "
                            "same columns", column=column)
    if rows_before == 0:
        _warn_unknown(frame, Columns.events_required + Columns.events_optional, file)
    try:
        _check_not_null(frame, Columns.events_required, file)
        timestamp = (_parse_timestamps(frame, file) if Columns.timestamp in frame
                     else np.arange(rows_of_log_before, rows_of_log_before + len(frame), dtype=np.int64))
        action = _parse_actions(frame, file)
    except DataError as error:
        row = None if error.row is None else error.row + rows_before
        raise DataError(file, error.reason, row=row, column=error.column) from None
    session = frame[Columns.session].astype("string") if Columns.session in frame else None
    return pd.DataFrame({
        Columns.user: frame[Columns.user].astype(str).to_numpy(),
        Columns.item: vocabs.items.encode(frame[Columns.item]),
        Columns.action: action, Columns.timestamp: timestamp,
        Columns.context: _encode_optional(frame, Columns.context, vocabs, "contexts", True),
        Columns.scenario: _encode_optional(frame, Columns.scenario, vocabs, "scenarios", True),
        Columns.session: session.to_numpy(dtype=object, na_value=None) if session is not None else None,
    })


def _add_counts(counts: np.ndarray, item_codes: np.ndarray) -> np.ndarray:
    batch_counts = np.bincount(item_codes, minlength=len(counts))
    return np.pad(counts, (0, len(batch_counts) - len(counts))) + batch_counts
