"""The data contract: events (and optional items) from CSV or Parquet into a validated, columnar `EventLog`.

Rules (DESIGN.md section 3):
- `user_id`, `item_id` are required; ids may be integers or strings.
- No `session_id`: sessions split where a user's gap between events exceeds `session_gap_s`.
  No `timestamp` either: row order within a user is time order and every event is its own session.
- No `action`: every event is a `click`. No `context`/`scenario`: the default one.
- Sessions are ordered by their first event; a session's context and scenario are those of its first event.
- Items missing from the items file get unknown side info (code 0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from contract.columns import (
    ACTION_CODES,
    COLUMN_ALIASES,
    DEFAULT_SESSION_GAP_S,
    Columns,
)
from contract.errors import DataError
from contract.item_text import attribute_tokens, item_text
from contract.table_io import part_of_row, read_table
from contract.vocab import Vocabularies

logger = logging.getLogger(__name__)


@dataclass
class ItemTable:
    """Side information by item code (index 0 is the padding item)."""

    category: np.ndarray  # (n_items,) int32 category codes, 0 = unknown
    seller: np.ndarray  # (n_items,) int32 seller codes, 0 = unknown
    title: np.ndarray  # (n_items,) object: title text or ""
    description: np.ndarray | None = None  # (n_items,) object: description text or ""
    attributes: np.ndarray | None = None  # (n_items, A) int32 attribute codes, 0 = none (padding)

    def __post_init__(self):
        n_items = len(self.category)
        if self.description is None:
            self.description = np.full(n_items, "", dtype=object)
        if self.attributes is None:
            self.attributes = np.zeros((n_items, 0), dtype=np.int32)

    @property
    def texts(self) -> list[str]:
        """What the sentence encoder reads for each item ("" where the item has neither title nor description)."""
        return [item_text(title, description) for title, description in zip(self.title, self.description,
                                                                              strict=True)]


@dataclass
class EventLog:
    """All events, sorted by user, then session, then time. Every array has one entry per event."""

    user: np.ndarray  # (N,) int32 user codes
    item: np.ndarray  # (N,) int32 item codes
    action: np.ndarray  # (N,) int8 codes of ACTIONS
    timestamp: np.ndarray  # (N,) int64 unix seconds (row order when the file had no timestamps)
    session: np.ndarray  # (N,) int64 session index, 0..S-1, non-decreasing
    context: np.ndarray  # (N,) int32 context codes, 0 = default
    scenario: np.ndarray  # (N,) int32 scenario codes, 0 = default
    vocabs: Vocabularies
    items: ItemTable
    has_timestamp: bool = True
    has_session_id: bool = False  # sessions came from the file, not from time gaps
    source: str = ""
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.user)

    @property
    def n_items(self) -> int:
        return len(self.vocabs.items)

    @cached_property
    def session_offsets(self) -> np.ndarray:
        """(S+1,) start of each session in the event arrays."""
        return _run_offsets(self.session)

    @cached_property
    def user_offsets(self) -> np.ndarray:
        """(U_active+1,) start of each active user's events; `active_users` names them."""
        return _run_offsets(self.user)

    @cached_property
    def active_users(self) -> np.ndarray:
        return self.user[self.user_offsets[:-1]]

    @cached_property
    def session_user(self) -> np.ndarray:
        return self.user[self.session_offsets[:-1]]

    @cached_property
    def session_context(self) -> np.ndarray:
        return self.context[self.session_offsets[:-1]]

    @cached_property
    def session_scenario(self) -> np.ndarray:
        return self.scenario[self.session_offsets[:-1]]

    @cached_property
    def session_start(self) -> np.ndarray:
        return self.timestamp[self.session_offsets[:-1]]

    def event_sessions(self) -> EventLog:
        """The same events with every event its own session (in each user's order): how the items layout reads
        a log, so that clicks keep their order and leave-one-out holds out one event, not its whole visit."""
        return replace(self, session=np.arange(len(self), dtype=np.int64))

    def take(self, mask: np.ndarray) -> EventLog:
        """The events where `mask` holds, sessions renumbered densely (vocabularies are shared)."""
        session = self.session[mask]
        dense_session = np.cumsum(np.r_[True, session[1:] != session[:-1]]) - 1 if len(session) else session
        return replace(self, user=self.user[mask], item=self.item[mask], action=self.action[mask],
                       timestamp=self.timestamp[mask], session=dense_session.astype(np.int64),
                       context=self.context[mask], scenario=self.scenario[mask])


def _run_offsets(sorted_keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(1, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    return np.r_[starts, len(sorted_keys)].astype(np.int64)


def load_events(
    events_path: str | Path,
    items_path: str | Path | None = None,
    *,
    session_gap_s: int = DEFAULT_SESSION_GAP_S,
    vocabs: Vocabularies | None = None,
    grow_vocabs: bool = True,
) -> EventLog:
    """Read and validate an events file (and an items file) into an `EventLog`.

    Pass the `vocabs` of a trained model to keep its codes; with `grow_vocabs` new ids get new codes appended,
    without it they map to code 0. Raises `DataError` naming the file, row and column of the first bad value.
    """
    vocabs = vocabs if vocabs is not None else Vocabularies()
    item_frame = read_table(items_path, Columns.items_required) if items_path is not None else None
    if item_frame is not None:
        _warn_unknown(item_frame, Columns.items_required + Columns.items_optional, str(items_path))
        _check_unique(item_frame, Columns.item, str(items_path))
        vocabs.items.encode(item_frame[Columns.item], grow=grow_vocabs)
    frame = read_table(events_path, Columns.events_required)
    path = str(events_path)
    frame = frame.rename(columns={alias: name for alias, name in COLUMN_ALIASES.items()
                                  if alias in frame and name not in frame})
    _warn_unknown(frame, Columns.events_required + Columns.events_optional, path)
    try:
        _check_not_null(frame, Columns.events_required, path)
        if Columns.event_id in frame:
            _check_unique(frame, Columns.event_id, path)
        user = vocabs.users.encode(frame[Columns.user], grow=grow_vocabs)
        item = vocabs.items.encode(frame[Columns.item], grow=grow_vocabs)
        action = _parse_actions(frame, path)
        context = _encode_optional(frame, Columns.context, vocabs, "contexts", grow_vocabs)
        scenario = _encode_optional(frame, Columns.scenario, vocabs, "scenarios", grow_vocabs)
        has_timestamp = Columns.timestamp in frame
        timestamp = _parse_timestamps(frame, path) if has_timestamp else np.arange(len(frame), dtype=np.int64)
        order, session = sessionize(frame, user, timestamp, has_timestamp, session_gap_s, path)
    except DataError as error:
        if error.row is None or not frame.attrs.get("parts"):
            raise
        file, row = part_of_row(frame, path, error.row)  # a directory: name the file the row is in
        raise DataError(file, error.reason, row=row, column=error.column) from None
    items = _item_table(item_frame, vocabs, grow_vocabs)
    logger.info("loaded %d events, %d sessions from %s", len(frame), session[-1] + 1, path)
    return EventLog(
        user=user[order], item=item[order], action=action[order], timestamp=timestamp[order],
        session=session, context=context[order], scenario=scenario[order], vocabs=vocabs, items=items,
        has_timestamp=has_timestamp, has_session_id=Columns.session in frame, source=path,
    )


def _warn_unknown(frame: pd.DataFrame, known: tuple[str, ...], path: str) -> None:
    """Name the columns the contract does not read, so a misspelt `timestmap` is not silently dropped."""
    unknown = [str(column) for column in frame.columns if column not in known]
    if unknown:
        logger.warning("%s: ignoring column(s) the data contract does not know: %s", path, ", ".join(unknown))


def _check_not_null(frame: pd.DataFrame, columns: tuple[str, ...], path: str) -> None:
    for column in columns:
        missing = frame[column].isna().to_numpy()
        if column in (Columns.user, Columns.item) and frame[column].dtype == object:
            missing |= (frame[column].astype(str).str.strip() == "").to_numpy()
        if missing.any():
            raise DataError(path, "missing value", row=int(np.argmax(missing)) + 1, column=column)


def _check_unique(frame: pd.DataFrame, column: str, path: str) -> None:
    duplicated = frame[column].duplicated().to_numpy()
    if duplicated.any():
        row = int(np.argmax(duplicated))
        value = frame[column].iloc[row]
        raise DataError(path, f"duplicate {column} {value!r}", row=row + 1, column=column)


def _parse_actions(frame: pd.DataFrame, path: str) -> np.ndarray:
    if Columns.action not in frame:
        return np.full(len(frame), ACTION_CODES["click"], dtype=np.int8)
    row_to_unique, uniques = pd.factorize(frame[Columns.action], use_na_sentinel=True)
    codes_of_uniques = np.empty(len(uniques), dtype=np.int8)
    for position, name in enumerate(uniques):
        code = ACTION_CODES.get(str(name).strip().lower())
        if code is None:
            row = int(np.argmax(row_to_unique == position)) + 1
            expected = ", ".join(ACTION_CODES)
            raise DataError(path, f"unknown action {name!r} (expected one of {expected})", row=row,
                            column=Columns.action)
        codes_of_uniques[position] = code
    # An empty action cell means the same as a missing column: a click (also when every cell is empty).
    codes = np.append(codes_of_uniques, np.int8(ACTION_CODES["click"]))
    return codes[np.where(row_to_unique >= 0, row_to_unique, len(codes_of_uniques))].astype(np.int8)


def _encode_optional(frame: pd.DataFrame, column: str, vocabs: Vocabularies, vocab_name: str,
                     grow: bool) -> np.ndarray:
    if column not in frame:
        return np.zeros(len(frame), dtype=np.int32)
    return getattr(vocabs, vocab_name).encode(frame[column], grow=grow)


def _parse_timestamps(frame: pd.DataFrame, path: str) -> np.ndarray:
    """Unix seconds from numbers (seconds), datetimes, or date-time text."""
    values = frame[Columns.timestamp]
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        seconds = values.to_numpy(dtype=np.float64)
    elif pd.api.types.is_datetime64_any_dtype(values):
        seconds = _datetime_seconds(values)
    else:
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all():
            seconds = numeric.to_numpy(dtype=np.float64)
        else:
            parsed = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
            seconds = _datetime_seconds(parsed)
    bad = ~np.isfinite(seconds)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(path, f"unparsable timestamp {values.iloc[row]!r} (expected unix seconds or ISO 8601)",
                        row=row + 1, column=Columns.timestamp)
    return np.floor(seconds).astype(np.int64)


def _datetime_seconds(values: pd.Series) -> np.ndarray:
    if values.dt.tz is None:
        values = values.dt.tz_localize("UTC")
    # The epoch in the values' own resolution (a nanosecond one overflows for dates before 1677), divided by a
    # timedelta so any resolution (s, ms, ns) gives seconds; NaT becomes NaN.
    elapsed = (values - pd.Timestamp(0, tz="UTC").as_unit(values.dt.unit)) / pd.Timedelta(seconds=1)
    return elapsed.to_numpy(dtype=np.float64, na_value=np.nan)


def sessionize(frame: pd.DataFrame, user: np.ndarray, timestamp: np.ndarray, has_timestamp: bool,
                session_gap_s: int, path: str) -> tuple[np.ndarray, np.ndarray]:
    """Sort order of the events and the session index of each sorted event."""
    if Columns.session in frame:
        # Sessions are per user: the same session_id under two users is two sessions.
        session_code, session_names = pd.factorize(frame[Columns.session])  # a missing id is -1
        session_code = session_code.astype(np.int64)
        missing = session_code < 0
        if missing.any():
            # Events sent without a session_id (the service archives them so) are sessionised as a file without
            # the column is: split at time gaps, or one session each without timestamps.
            gap_order, gap_session = sessionize(frame.loc[missing].drop(columns=Columns.session), user[missing],
                                                 timestamp[missing], has_timestamp, session_gap_s, path)
            in_file_order = np.empty_like(gap_session)
            in_file_order[gap_order] = gap_session
            session_code[missing] = len(session_names) + in_file_order
        n_labels = int(session_code.max(initial=0)) + 1
        session_key = pd.factorize(user.astype(np.int64) * n_labels + session_code)[0]
        first_time = pd.Series(timestamp).groupby(session_key).transform("min").to_numpy()
        order = np.lexsort((timestamp, session_key, first_time, user))
        sorted_key = session_key[order]
        is_new = np.r_[True, sorted_key[1:] != sorted_key[:-1]]
    elif has_timestamp:
        order = np.lexsort((timestamp, user))
        sorted_user, sorted_time = user[order], timestamp[order]
        is_new = np.r_[True, (sorted_user[1:] != sorted_user[:-1])
                       | (sorted_time[1:] - sorted_time[:-1] > session_gap_s)]
    else:
        order = np.argsort(user, kind="stable")
        is_new = np.ones(len(order), dtype=bool)
    return order, (np.cumsum(is_new) - 1).astype(np.int64)


def _item_table(item_frame: pd.DataFrame | None, vocabs: Vocabularies, grow: bool) -> ItemTable:
    n_items = len(vocabs.items)
    category = np.zeros(n_items, dtype=np.int32)
    seller = np.zeros(n_items, dtype=np.int32)
    texts = {name: np.full(n_items, "", dtype=object) for name in (Columns.title, Columns.description)}
    attributes = np.zeros((n_items, 0), dtype=np.int32)
    if item_frame is not None:
        codes = vocabs.items.encode(item_frame[Columns.item], grow=False)
        known = codes > 0
        for column, target, vocab_name in ((Columns.category, category, "categories"),
                                           (Columns.seller, seller, "sellers")):
            if column in item_frame:
                target[codes[known]] = getattr(vocabs, vocab_name).encode(item_frame[column], grow=grow)[known]
        for column, target in texts.items():
            if column in item_frame:
                target[codes[known]] = item_frame[column].fillna("").astype(str).to_numpy()[known]
        if Columns.attributes in item_frame:
            attributes = _attribute_codes(item_frame[Columns.attributes], codes, n_items, vocabs, grow)
    return ItemTable(category=category, seller=seller, title=texts[Columns.title],
                     description=texts[Columns.description], attributes=attributes)


def _attribute_codes(column: pd.Series, codes: np.ndarray, n_items: int, vocabs: Vocabularies,
                     grow: bool) -> np.ndarray:
    """(n_items, A) attribute codes from "key:value|key:value" strings (A: the most any item has, at most
    MAX_ATTRIBUTES, see attribute_tokens); 0 pads. "cat:3" and "cat:7" are two attributes of one key."""
    tokens = column.fillna("").astype(str).map(attribute_tokens)
    lengths = tokens.map(len).to_numpy()
    flat = pd.Series([value for values in tokens for value in values], dtype=object)
    flat_codes = vocabs.attributes.encode(flat, grow=grow) if len(flat) else np.zeros(0, dtype=np.int32)
    attributes = np.zeros((n_items, int(lengths.max(initial=0))), dtype=np.int32)
    rows = np.repeat(codes, lengths)
    columns = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    attributes[rows, columns] = flat_codes
    attributes[0] = 0  # items the vocabulary does not know
    return attributes
