"""How events become encoder inputs: sessions, truncation at session boundaries, the query token."""

from __future__ import annotations

import numpy as np

from contract.events import load_events
from contract.tokens import (
    CONTEXT_TOKEN,
    ITEM_TOKEN,
    PAD,
    build_tokens,
    collate,
    history_windows,
    query_tokens,
    session_table,
    training_windows,
)

HOUR = 3600


def three_sessions(write_csv):
    return load_events(write_csv([
        {"user_id": 1, "session_id": 1, "timestamp": 0, "item_id": "a", "action": "show", "context": "home"},
        {"user_id": 1, "session_id": 1, "timestamp": 5, "item_id": "a", "action": "click", "context": "home"},
        {"user_id": 1, "session_id": 1, "timestamp": 0, "item_id": "b", "action": "show", "context": "home"},
        {"user_id": 1, "session_id": 2, "timestamp": 2 * HOUR, "item_id": "c", "action": "pay", "context": "q"},
        {"user_id": 1, "session_id": 3, "timestamp": 5 * HOUR, "item_id": "d", "action": "show", "context": "q"},
        {"user_id": 1, "session_id": 3, "timestamp": 5 * HOUR, "item_id": "e", "action": "show", "context": "q"},
        {"user_id": 1, "session_id": 3, "timestamp": 5 * HOUR, "item_id": "f", "action": "show", "context": "q"},
    ]))


def test_sessions_keep_distinct_items_with_their_strongest_action_first(write_csv):
    log = three_sessions(write_csv)
    table = session_table(log, max_items_per_session=32)
    first = slice(table.item_offsets[0], table.item_offsets[1])
    assert list(log.vocabs.items.decode(table.item[first])) == ["a", "b"]  # a (clicked) before b (shown)
    assert list(table.action[first]) == [1, 0]
    capped = session_table(log, max_items_per_session=2)
    assert list(np.diff(capped.item_offsets)) == [2, 1, 2]


def test_tokens_of_a_user_and_truncation_at_session_boundaries(write_csv):
    table = session_table(three_sessions(write_csv), max_items_per_session=32)
    tokens = build_tokens(table)
    assert list(tokens.features["token_type"]) == [CONTEXT_TOKEN, ITEM_TOKEN, ITEM_TOKEN, CONTEXT_TOKEN, ITEM_TOKEN,
                                                   CONTEXT_TOKEN, ITEM_TOKEN, ITEM_TOKEN, ITEM_TOKEN]
    # 9 tokens; windows of at most 6 tokens hold whole sessions only: [s1] and [s2, s3] (2 + 4 tokens)
    assert training_windows(table, tokens, max_len=6).tolist() == [[1, 3], [0, 1]]
    # at inference one token is kept for the query: the most recent sessions that fit 5 tokens: s3 only
    windows = history_windows(table, tokens, np.array([table.user[0]]), max_len=6)
    assert windows.tolist() == [[2, 3]]


def test_query_token_carries_the_request_context_and_time(write_csv):
    log = three_sessions(write_csv)
    table = session_table(log, max_items_per_session=32)
    tokens = build_tokens(table)
    windows = history_windows(table, tokens, np.array([table.user[0]]), max_len=50)
    query = query_tokens(table, windows, np.array([7]), np.array([0]), np.array([5 * HOUR + 30 * 60]))
    batch = collate(tokens, windows, query)
    assert batch["token_type"][0, -1] == CONTEXT_TOKEN and batch["context"][0, -1] == 7
    assert batch["session_pos"][0, -1] == 3  # the session after the three of the history
    assert batch["gap"][0, -1] == 1 + int(np.log2(1 + 30))  # 30 minutes after the last session
    assert batch["hour"][0, -1] == 6  # 05:30 UTC is hour 5, stored as 5 + 1


def test_cold_user_gets_only_the_query_token(write_csv):
    log = three_sessions(write_csv)
    table = session_table(log, max_items_per_session=32)
    tokens = build_tokens(table)
    windows = history_windows(table, tokens, np.array([999]), max_len=50)
    batch = collate(tokens, windows, query_tokens(table, windows, np.array([0]), np.array([0]), np.array([0])))
    assert list(batch["token_type"][0]) == [PAD, CONTEXT_TOKEN]


def test_item_sequences_for_sasrec_keep_only_acted_items(write_csv):
    log = three_sessions(write_csv)
    tokens = build_tokens(session_table(log, max_items_per_session=32), with_context=False)
    assert list(log.vocabs.items.decode(tokens.features["item"])) == ["a", "c"]


def test_one_event_per_session_data_still_builds(write_csv):
    log = load_events(write_csv([{"user_id": 1, "item_id": i} for i in range(5)]))
    table = session_table(log, max_items_per_session=32)
    tokens = build_tokens(table)
    assert table.n_sessions == 5 and len(tokens.features["item"]) == 10
    assert (training_windows(table, tokens, max_len=4) >= 0).all()
