"""Property tests of the data loader: whatever a CSV holds, `load_events` returns a consistent event log or raises
`DataError` naming the file (and the row and column where there is one) - never another exception."""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
from hypothesis import given, settings

from contract.errors import DataError
from contract.events import load_events

COLUMNS = ["user_id", "item_id", "timestamp", "action", "context", "scenario", "session_id", "event_id"]
ODD_CELLS = ["", "nan", "1e309", "-0", "2026-11-23T10:00:00Z", "show", "click", "cart", "pay", "buy", "😀"]
# Mostly plausible values (so many files load), now and then an odd one or any text.
cell = st.integers(0, 19).flatmap(lambda roll: st.sampled_from(ODD_CELLS) if roll == 0 else
                                  st.text(min_size=1, max_size=12) if roll == 1 else
                                  st.integers(0, 10**9).map(str))
# Mostly the two required columns plus some optional ones (so most files get past the header), sometimes any.
headers = st.one_of(
    st.lists(st.sampled_from(COLUMNS[2:]), max_size=6, unique=True).map(lambda rest: ["user_id", "item_id", *rest]),
    st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=8, unique=True))
tables = st.tuples(headers, st.integers(0, 12)).flatmap(lambda shape: st.tuples(st.just(shape[0]),
                                  st.lists(st.lists(cell, min_size=len(shape[0]), max_size=len(shape[0])),
                                           min_size=shape[1], max_size=shape[1])))


@given(tables)
@settings(max_examples=400, deadline=None)
def test_any_csv_loads_consistently_or_is_one_clear_data_error(table):
    header, rows = table
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "events.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
        try:
            log = load_events(path)
        except DataError as error:
            assert error.path == str(path) and str(error).startswith(str(path))
            if error.row is not None:
                assert 1 <= error.row <= max(len(rows), 1)
            if error.column is not None:
                assert error.column in COLUMNS
            return
    assert {"user_id", "item_id"} <= set(header) and len(rows) > 0
    n = len(rows)
    assert len(log.user) == len(log.item) == len(log.action) == len(log.timestamp) == n
    assert log.session[0] == 0 and np.all(np.diff(log.session) >= 0)  # sessions numbered in order
    assert np.all(log.user > 0) and np.all(log.item > 0)
