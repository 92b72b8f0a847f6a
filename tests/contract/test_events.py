"""The data contract: every rule and every bad-input error, on tiny hand-built tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from contract.columns import ACTION_CODES
from contract.errors import DataError
from contract.events import load_events

HOUR = 3600


def test_minimal_file_every_event_is_its_own_session_in_row_order(write_csv):
    path = write_csv([
        {"user_id": "u2", "item_id": "a"},
        {"user_id": "u1", "item_id": "b"},
        {"user_id": "u2", "item_id": "c"},  # u2's second event: after "a" because it comes later
    ])
    log = load_events(path)
    assert not log.has_timestamp
    assert list(log.vocabs.users.decode(log.user)) == ["u2", "u2", "u1"]
    assert list(log.vocabs.items.decode(log.item)) == ["a", "c", "b"]
    assert list(log.session) == [0, 1, 2]
    assert (log.action == ACTION_CODES["click"]).all()  # no action column: clicks
    assert (log.context == 0).all()  # no context column: the default context


def test_sessions_split_at_time_gap(write_csv):
    path = write_csv([
        {"user_id": 1, "item_id": 10, "timestamp": 0},
        {"user_id": 1, "item_id": 11, "timestamp": 10 * 60},  # 10 min later: same session
        {"user_id": 1, "item_id": 12, "timestamp": 10 * 60 + 31 * 60},  # 31 min gap: new session
        {"user_id": 2, "item_id": 10, "timestamp": 5},  # another user: another session
    ])
    assert list(load_events(path).session) == [0, 0, 1, 2]
    assert list(load_events(path, session_gap_s=HOUR).session) == [0, 0, 0, 1]


def test_rows_sorted_by_time_within_user(write_csv):
    path = write_csv([
        {"user_id": 1, "item_id": 12, "timestamp": 300},
        {"user_id": 1, "item_id": 10, "timestamp": 100},
        {"user_id": 1, "item_id": 11, "timestamp": 200},
    ])
    log = load_events(path)
    assert list(log.vocabs.items.decode(log.item)) == [10, 11, 12]
    assert list(log.timestamp) == [100, 200, 300]


def test_given_session_ids_are_per_user_and_ordered_by_first_event(write_csv):
    path = write_csv([
        {"user_id": 1, "session_id": "late", "item_id": 1, "timestamp": 900, "context": "q:shoes"},
        {"user_id": 1, "session_id": "early", "item_id": 2, "timestamp": 100, "context": "home"},
        {"user_id": 1, "session_id": "late", "item_id": 3, "timestamp": 950, "context": "other"},
        {"user_id": 2, "session_id": "early", "item_id": 4, "timestamp": 100, "context": "home"},
    ])
    log = load_events(path)
    assert list(log.session) == [0, 1, 1, 2]  # "early" before "late"; user 2's "early" is its own session
    contexts = log.vocabs.contexts.decode(log.session_context)
    assert list(contexts) == ["home", "q:shoes", "home"]  # a session's context is its first event's


def test_integer_and_string_ids_round_trip(write_csv):
    path = write_csv([{"user_id": 7, "item_id": "sku-1"}, {"user_id": 8, "item_id": "sku-2"}])
    log = load_events(path)
    users = log.vocabs.users.decode(log.user)
    assert users.dtype == np.int64 and list(users) == [7, 8]
    assert list(log.vocabs.items.decode(log.item)) == ["sku-1", "sku-2"]


def test_csv_and_parquet_load_the_same(write_csv):
    rows = [{"user_id": 1, "item_id": 5, "timestamp": 10, "action": "show", "context": "home"},
            {"user_id": 1, "item_id": 5, "timestamp": 20, "action": "pay", "context": "home"}]
    from_csv, from_parquet = load_events(write_csv(rows)), load_events(write_csv(rows, "events.parquet"))
    for name in ("user", "item", "action", "timestamp", "session", "context"):
        assert np.array_equal(getattr(from_csv, name), getattr(from_parquet, name))


def test_iso_timestamps_and_actions_are_parsed(write_csv):
    path = write_csv([
        {"user_id": 1, "item_id": 5, "timestamp": "2026-01-01T00:00:10Z", "action": "show"},
        {"user_id": 1, "item_id": 5, "timestamp": "2026-01-01T00:01:00Z", "action": "Cart"},
    ])
    log = load_events(path)
    assert list(log.timestamp - log.timestamp[0]) == [0, 50]
    assert list(log.action) == [ACTION_CODES["show"], ACTION_CODES["cart"]]


def test_items_file_side_info_and_unknown_items(write_csv):
    items = write_csv([{"item_id": 1, "category": "shoes", "seller": "acme", "title": "red shoe"},
                       {"item_id": 2, "category": "hats", "seller": "acme", "title": "cap"},
                       {"item_id": 3, "category": "hats", "seller": "zed", "title": "never bought"}], "items.csv")
    events = write_csv([{"user_id": 1, "item_id": 1}, {"user_id": 1, "item_id": 99}])
    log = load_events(events, items)
    codes = {item: log.vocabs.items.code_of(item) for item in (1, 2, 3, 99)}
    assert log.n_items == 5  # reserved code + 3 catalogue items + 1 item seen only in events
    assert log.vocabs.categories.ids[log.items.category[codes[1]]] == "shoes"
    assert log.items.category[codes[2]] == log.items.category[codes[3]]
    assert log.items.seller[codes[1]] == log.items.seller[codes[2]]
    assert log.items.category[codes[99]] == 0 and log.items.seller[codes[99]] == 0  # unknown side info
    assert log.items.title[codes[3]] == "never bought"


def _error(path, **kwargs) -> DataError:
    with pytest.raises(DataError) as caught:
        load_events(path, **kwargs)
    return caught.value


def test_missing_required_column_is_named(write_csv):
    error = _error(write_csv([{"user_id": 1, "product": 2}]))
    assert error.column == "item_id" and "missing required column" in str(error)


def test_unknown_action_names_row_and_column(write_csv):
    error = _error(write_csv([{"user_id": 1, "item_id": 1, "action": "click"},
                              {"user_id": 1, "item_id": 2, "action": "buy"}]))
    assert (error.row, error.column) == (2, "action")
    assert "'buy'" in str(error) and "show, click, cart, pay" in str(error)


def test_unparsable_timestamp_names_row(write_csv):
    error = _error(write_csv([{"user_id": 1, "item_id": 1, "timestamp": "2026-01-01T00:00:00"},
                              {"user_id": 1, "item_id": 2, "timestamp": "2026-01-01T00:00:05"},
                              {"user_id": 1, "item_id": 3, "timestamp": "yesterday"}]))
    assert (error.row, error.column) == (3, "timestamp") and "'yesterday'" in str(error)


def test_empty_file_and_header_only(tmp_path, write_csv):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert "file is empty" in str(_error(empty))
    header_only = tmp_path / "header.csv"
    header_only.write_text("user_id,item_id\n")
    assert "no rows" in str(_error(header_only))


def test_duplicate_event_id_names_the_second_row(write_csv):
    error = _error(write_csv([{"event_id": "e1", "user_id": 1, "item_id": 1},
                              {"event_id": "e2", "user_id": 1, "item_id": 2},
                              {"event_id": "e1", "user_id": 2, "item_id": 3}]))
    assert (error.row, error.column) == (3, "event_id") and "duplicate" in str(error)


def test_missing_user_id_value_names_row(write_csv):
    error = _error(write_csv(pd.DataFrame({"user_id": ["a", None], "item_id": [1, 2]})))
    assert (error.row, error.column) == (2, "user_id")


def test_error_message_names_the_file(write_csv):
    path = write_csv([{"user_id": 1, "item_id": 1, "action": "like"}])
    assert str(_error(path)).startswith(f"{path}, row 1, column 'action'")


def test_unsupported_file_type(tmp_path):
    path = tmp_path / "events.json"
    path.write_text("[]")
    assert "unsupported file type" in str(_error(path))


def write_parquet_part(directory, rows: list[dict]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(directory / "part-0.parquet", index=False)


def test_a_directory_of_parquet_files_is_one_log(tmp_path):
    """An hour-partitioned archive (what the service's archive writes) trains as one log, in any file order."""
    archive = tmp_path / "archive"
    write_parquet_part(archive / "date=2026-12-03" / "hour=15", [
        {"user_id": "u1", "item_id": "b", "timestamp": 1_764_774_000}])
    write_parquet_part(archive / "date=2026-12-03" / "hour=14", [
        {"user_id": "u1", "item_id": "a", "timestamp": 1_764_770_000},
        {"user_id": "u2", "item_id": "a", "timestamp": 1_764_770_500}])
    (archive / "date=2026-12-03" / "hour=15" / ".part-1.parquet.tmp").write_bytes(b"half-written")
    log = load_events(archive)
    assert len(log) == 3 and log.vocabs.items.decode(log.item[log.user == log.vocabs.users.encode(
        pd.Series(["u1"]), grow=False)[0]]).tolist() == ["a", "b"]


def test_a_bad_row_in_a_directory_is_named_in_its_own_file(tmp_path):
    archive = tmp_path / "archive"
    write_parquet_part(archive / "hour=14", [{"user_id": "u1", "item_id": "a", "timestamp": 1_764_770_000}])
    write_parquet_part(archive / "hour=15", [{"user_id": "u1", "item_id": "b", "timestamp": 1_764_774_000},
                                             {"user_id": None, "item_id": "c", "timestamp": 1_764_774_100}])
    with pytest.raises(DataError) as error:
        load_events(archive)
    assert error.value.path == str(archive / "hour=15" / "part-0.parquet")
    assert (error.value.row, error.value.column) == (2, "user_id")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no Parquet files"):
        load_events(tmp_path / "empty")


def test_events_without_a_session_id_beside_ones_with_it_split_at_time_gaps(tmp_path):
    """What the service archives: events sent with and without a session_id, in one log. Those without one are
    sessionised as a file without the column is, and never join a named session."""
    pd.DataFrame({"user_id": [1, 1, 1, 1, 2, 2], "item_id": [10, 11, 12, 13, 10, 14],
                  "timestamp": [0, 60, 5000, 5060, 0, 9000],
                  "session_id": ["a", "a", None, None, None, None]}).to_parquet(tmp_path / "archived.parquet")
    log = load_events(tmp_path / "archived.parquet")
    sessions = [log.vocabs.items.decode(log.item[log.session == s]).tolist() for s in np.unique(log.session)]
    assert sessions == [[10, 11], [12, 13], [10], [14]]


def test_rectools_columns_read_datetime_as_the_timestamp_and_name_the_rest(write_csv, caplog):
    """RecTools' interactions (user_id, item_id, weight, datetime): the time is kept, the weight named as unread."""
    path = write_csv([{"user_id": 1, "item_id": "a", "weight": 1.0, "datetime": "2026-01-01 10:00:00"},
                      {"user_id": 1, "item_id": "b", "weight": 2.0, "datetime": "2026-01-01 12:00:00"}])
    with caplog.at_level("WARNING", logger="contract.events"):
        log = load_events(path)
    assert log.has_timestamp and list(np.diff(log.timestamp)) == [7200]
    assert len(np.unique(log.session)) == 2  # two hours apart: split at the 30-minute gap
    assert "weight" in caplog.text and "datetime" not in caplog.text


def test_concurrent_writers_of_one_table_leave_a_whole_file(tmp_path):
    """Two benchmarks preparing one cached dataset at once: each renames its own whole file into place."""
    import threading

    from contract.table_io import read_table, write_table

    target = tmp_path / "items.parquet"
    frames = [pd.DataFrame({"item_id": range(start, start + 50_000)}) for start in (0, 1)]
    writers = [threading.Thread(target=write_table, args=(frame, target)) for frame in frames for _ in range(3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    assert len(read_table(target, ("item_id",))) == 50_000 and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_items_file_text_and_multi_valued_attributes(write_csv):
    items = write_csv([{"item_id": 1, "title": "red shoe", "description": "leather",
                        "attributes": "brand:7|cat:3|cat:3"},
                       {"item_id": 2, "title": "cap", "description": "", "attributes": " cat:3 | size:m "},
                       {"item_id": 3, "title": "", "description": "", "attributes": ""}], "items.csv")
    log = load_events(write_csv([{"user_id": 1, "item_id": 1}, {"user_id": 1, "item_id": 99}]), items)
    codes = {item: log.vocabs.items.code_of(item) for item in (1, 2, 3, 99)}

    def attributes_of(item):
        return {log.vocabs.attributes.ids[code] for code in log.items.attributes[codes[item]] if code}

    assert attributes_of(1) == {"brand:7", "cat:3"}  # a repeated value counts once
    assert attributes_of(2) == {"cat:3", "size:m"}  # spaces around values are not part of them
    assert attributes_of(3) == set() and attributes_of(99) == set()
    assert log.items.attributes[codes[1]].tolist().count(log.vocabs.attributes.code_of("cat:3")) == 1
    texts = log.items.texts
    assert texts[codes[1]] == "red shoe. leather" and texts[codes[2]] == "cap"
    assert texts[codes[3]] == "" and texts[codes[99]] == ""  # nothing to embed: the item keeps its id and side info
