"""Leave-one-out and temporal splits on small commented tables."""

from __future__ import annotations

import numpy as np

from contract.events import load_events
from evaluation.splits import leave_one_out, sample_cases, temporal_split, viewed_items

DAY = 86_400


def test_leave_one_out_holds_out_each_users_last_target(write_csv):
    log = load_events(write_csv([
        {"user_id": 1, "item_id": "a"},
        {"user_id": 1, "item_id": "b"},
        {"user_id": 1, "item_id": "c"},  # user 1's target
        {"user_id": 2, "item_id": "a"},  # user 2 has one event: no history, not evaluated, kept for training
    ]))
    split = leave_one_out(log)
    items = log.vocabs.items
    assert list(items.decode(split.cases.target_items)) == ["c"]
    assert list(items.decode(split.train.item)) == ["a", "b", "a"]
    validation = leave_one_out(log, holdout=2)
    assert list(items.decode(validation.cases.target_items)) == ["b"]
    assert list(items.decode(validation.train.item)) == ["a", "a"]


def test_a_sampled_leave_one_out_takes_only_the_sampled_users_targets_from_training(write_csv):
    log = load_events(write_csv([{"user_id": user, "item_id": f"i{step}"} for user in range(20) for step in range(3)]))
    split = leave_one_out(log, max_cases=5, seed=7)
    # The same users as sampling the full holdout, so validation watches what it did before...
    full = sample_cases(leave_one_out(log), 5, seed=7)
    np.testing.assert_array_equal(split.cases.user, full.cases.user)
    np.testing.assert_array_equal(split.cases.target_items, full.cases.target_items)
    # ...but the 15 users not sampled keep their last click for training.
    assert len(split.train) == 20 * 3 - 5
    last_kept = np.bincount(split.train.user, minlength=20)
    assert sorted(np.flatnonzero(last_kept == 2)) == sorted(split.cases.user)


def test_leave_one_out_ignores_trailing_shows(write_csv):
    log = load_events(write_csv([
        {"user_id": 1, "item_id": "a", "action": "click"},
        {"user_id": 1, "item_id": "b", "action": "click"},  # the last target event
        {"user_id": 1, "item_id": "c", "action": "show"},  # later, but only shown: dropped with the target
    ]))
    split = leave_one_out(log)
    assert list(log.vocabs.items.decode(split.cases.target_items)) == ["b"]
    assert len(split.train) == 1


def test_temporal_split_predicts_the_first_acted_session_after_the_split(write_csv):
    rows = [
        {"user_id": 1, "session_id": 1, "timestamp": 1 * DAY, "item_id": "a", "action": "click", "context": "home"},
        # after the split: a session with only shows is skipped, the next one with a click is the target
        {"user_id": 1, "session_id": 2, "timestamp": 10 * DAY, "item_id": "x", "action": "show", "context": "home"},
        {"user_id": 1, "session_id": 3, "timestamp": 11 * DAY, "item_id": "b", "action": "show", "context": "q"},
        {"user_id": 1, "session_id": 3, "timestamp": 11 * DAY, "item_id": "b", "action": "click", "context": "q"},
        {"user_id": 1, "session_id": 3, "timestamp": 11 * DAY, "item_id": "c", "action": "pay", "context": "q"},
        {"user_id": 1, "session_id": 4, "timestamp": 12 * DAY, "item_id": "d", "action": "click", "context": "q"},
        # a cold user (nothing before the split) is not evaluated
        {"user_id": 2, "session_id": 5, "timestamp": 11 * DAY, "item_id": "a", "action": "click", "context": "q"},
    ]
    log = load_events(write_csv(rows))
    split = temporal_split(log, split_time=5 * DAY)
    assert len(split.cases) == 1
    assert sorted(log.vocabs.items.decode(split.cases.target_items)) == ["b", "c"]
    assert log.vocabs.contexts.ids[split.cases.context[0]] == "q"  # the target session's context
    assert list(log.vocabs.items.decode(split.train.item)) == ["a"]


def test_viewed_items_are_the_users_acted_items_in_training(write_csv):
    log = load_events(write_csv([
        {"user_id": 1, "item_id": "a", "action": "click"},
        {"user_id": 1, "item_id": "b", "action": "show"},  # only shown: not viewed
        {"user_id": 1, "item_id": "a", "action": "pay"},
        {"user_id": 2, "item_id": "c", "action": "click"},
    ]))
    users = np.array([log.vocabs.users.code_of(2), log.vocabs.users.code_of(1)])
    offsets, items = viewed_items(log, users)
    assert list(offsets) == [0, 1, 2]
    assert list(log.vocabs.items.decode(items)) == ["c", "a"]


def test_leave_one_out_history_stops_before_the_target_session(write_csv):
    log = load_events(write_csv([
        {"user_id": 1, "session_id": "s1", "item_id": "a", "action": "click"},
        {"user_id": 1, "session_id": "s2", "item_id": "x", "action": "show"},  # shown with the target: not known
        {"user_id": 1, "session_id": "s2", "item_id": "b", "action": "click"},  # the target
    ]))
    split = leave_one_out(log)
    assert list(log.vocabs.items.decode(split.train.item)) == ["a"]


def test_temporal_split_can_include_cold_users(write_csv):
    log = load_events(write_csv([
        {"user_id": 1, "timestamp": 1 * DAY, "item_id": "a", "action": "click"},
        {"user_id": 1, "timestamp": 9 * DAY, "item_id": "b", "action": "click"},
        {"user_id": 2, "timestamp": 9 * DAY, "item_id": "a", "action": "click"},  # cold: nothing before day 5
    ]))
    assert len(temporal_split(log, split_time=5 * DAY).cases) == 1
    with_cold = temporal_split(log, split_time=5 * DAY, include_cold_users=True)
    assert len(with_cold.cases) == 2


def test_temporal_split_holds_out_the_last_sessions_when_they_all_start_together(write_csv):
    """A short window where every user's latest session opened at the same second (the archive of a burst): the
    quantile of event times falls inside those sessions, and they are still the ones held out."""
    rows = [{"user_id": user, "timestamp": start + event, "item_id": f"i{user}{event}", "action": "click",
             "session_id": f"{user}-{start}"}
            for user in range(5) for start in (0, 3600, 7200) for event in range(4)]
    split = temporal_split(load_events(write_csv(rows)))
    assert len(split.cases) == 5 and set(split.cases.request_time) == {7200}
