"""Logs larger than memory: the streaming pass that splits a Parquet log into shards of whole users."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from contract.errors import DataError
from contract.events import load_events
from contract.user_shards import UserShards, count_rows, write_user_shards


@pytest.fixture
def two_file_log(tiny_world, tmp_path):
    """The tiny world's events split over two Parquet files in a partitioned directory, as the archive writes."""
    events = pd.read_parquet(tiny_world / "events.parquet")
    half = len(events) // 2
    for name, part in (("date=1", events.iloc[:half]), ("date=2", events.iloc[half:])):
        (tmp_path / "log" / name).mkdir(parents=True)
        part.to_parquet(tmp_path / "log" / name / "part-0.parquet")
    return tmp_path / "log", tiny_world / "items.parquet"


def test_every_user_is_whole_in_one_shard_and_reads_as_the_whole_log_reads_it(two_file_log, tmp_path):
    log_dir, items = two_file_log
    whole = load_events(log_dir, items)
    shards = write_user_shards(log_dir, items, tmp_path / "shards", shard_events=-(-len(whole) // 4),
                               session_gap_s=1800, show_progress=False)
    assert shards.n_shards == 4 and shards.events == len(whole)
    users_seen: set[str] = set()
    for shard in range(shards.n_shards):
        part = shards.load(shard)
        user_ids = part.vocabs.users.decode(part.active_users)
        assert not users_seen & set(user_ids)  # a user in two shards would be trained on twice
        users_seen |= set(user_ids)
        for user_id in user_ids[:20]:
            mine, theirs = part.user == part.vocabs.users.code_of(user_id), whole.user == whole.vocabs.users.code_of(
                user_id)
            assert list(shards.vocabs.items.decode(part.item[mine])) == list(whole.vocabs.items.decode(
                whole.item[theirs]))
            assert np.array_equal(part.timestamp[mine], whole.timestamp[theirs])
            assert np.array_equal(part.action[mine], whole.action[theirs])
            assert np.array_equal(np.diff(part.session[mine]), np.diff(whole.session[theirs]))
            assert list(part.vocabs.contexts.decode(part.context[mine])) == list(
                whole.vocabs.contexts.decode(whole.context[theirs]))
    assert users_seen == set(map(str, whole.vocabs.users.decode(whole.active_users)))
    assert np.array_equal(shards.load(0).items.category, whole.items.category)
    assert shards.item_events.sum() == len(whole)
    # Another process (another rank) opens the same shards.
    assert UserShards.open(tmp_path / "shards").load(1).item.tolist() == shards.load(1).item.tolist()


def test_without_timestamps_row_order_across_files_is_time_order(tmp_path):
    (tmp_path / "log").mkdir()
    pd.DataFrame({"user_id": ["a", "a"], "item_id": ["1", "2"]}).to_parquet(tmp_path / "log" / "0.parquet")
    pd.DataFrame({"user_id": ["a"], "item_id": ["3"]}).to_parquet(tmp_path / "log" / "1.parquet")
    shards = write_user_shards(tmp_path / "log", None, tmp_path / "shards", 10, 1800, show_progress=False)
    part = shards.load(0)
    assert list(part.vocabs.items.decode(part.item)) == ["1", "2", "3"]
    assert not part.has_timestamp and list(part.session) == [0, 1, 2]


def test_a_bad_row_is_named_by_its_own_file_and_row(two_file_log, tmp_path):
    log_dir, items = two_file_log
    second = log_dir / "date=2" / "part-0.parquet"
    frame = pd.read_parquet(second)
    frame["action"] = frame["action"].astype(str)
    frame.loc[frame.index[41], "action"] = "zap"
    frame.to_parquet(second)
    with pytest.raises(DataError) as raised:
        write_user_shards(log_dir, items, tmp_path / "shards", 1000, 1800, show_progress=False)
    assert str(raised.value).startswith(f"{second}, row 42, column 'action': unknown action 'zap'")


def test_files_that_disagree_on_timestamps_are_refused(tmp_path):
    (tmp_path / "log").mkdir()
    pd.DataFrame({"user_id": ["a"], "item_id": ["1"], "timestamp": [5]}).to_parquet(tmp_path / "log" / "0.parquet")
    pd.DataFrame({"user_id": ["b"], "item_id": ["2"]}).to_parquet(tmp_path / "log" / "1.parquet")
    with pytest.raises(DataError, match="column timestamp is missing here but present in"):
        write_user_shards(tmp_path / "log", None, tmp_path / "shards", 10, 1800, show_progress=False)


def test_without_timestamps_sessions_named_in_the_file_keep_row_order_across_files(tmp_path):
    (tmp_path / "log").mkdir()
    pd.DataFrame({"user_id": ["a", "a"], "item_id": ["1", "2"], "session_id": ["s1", "s2"]}).to_parquet(
        tmp_path / "log" / "0.parquet")
    pd.DataFrame({"user_id": ["a"], "item_id": ["3"], "session_id": ["s3"]}).to_parquet(tmp_path / "log" / "1.parquet")
    part = write_user_shards(tmp_path / "log", None, tmp_path / "shards", 10, 1800, show_progress=False).load(0)
    assert list(part.vocabs.items.decode(part.item)) == ["1", "2", "3"]
    assert list(part.session) == [0, 1, 2]


def test_a_directory_streams_the_files_load_events_reads_and_names_an_empty_one(tmp_path):
    (tmp_path / "log" / "date=1").mkdir(parents=True)
    pd.DataFrame({"user_id": ["a"], "item_id": ["1"]}).to_parquet(tmp_path / "log" / "date=1" / "_part.parquet")
    pd.DataFrame({"user_id": ["b"], "item_id": ["2"]}).to_parquet(tmp_path / "log" / ".writing.parquet")
    (tmp_path / "log" / "README.txt").write_text("not data")
    assert count_rows(tmp_path / "log") == len(load_events(tmp_path / "log")) == 1
    shards = write_user_shards(tmp_path / "log", None, tmp_path / "shards", 10, 1800, show_progress=False)
    assert shards.events == 1
    (tmp_path / "log" / "empty.parquet").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.parquet: file is empty"):
        count_rows(tmp_path / "log")
