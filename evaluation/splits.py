"""Evaluation splits: leave-one-out and global temporal. Both give a training log and the cases to predict.

A case is one user at request time: their history is all of their events in `train`, the request's context is
the target session's context (known before its items appear), the targets are the distinct items the user then
acted on with a target action (click, cart or pay by default: a `show` is the logging policy, not the user).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from contract.columns import CLICK
from contract.events import EventLog


@dataclass
class EvalCases:
    user: np.ndarray  # (n,) int32 user codes
    context: np.ndarray  # (n,) int32 context of the target session
    scenario: np.ndarray  # (n,) int32 scenario of the target session
    request_time: np.ndarray  # (n,) int64 unix seconds of the target session's start
    target_offsets: np.ndarray  # (n+1,) int64 CSR offsets into target_items
    target_items: np.ndarray  # (T,) int32 item codes

    def __len__(self) -> int:
        return len(self.user)

    @property
    def n_targets(self) -> np.ndarray:
        return np.diff(self.target_offsets)


@dataclass
class Split:
    protocol: str
    train: EventLog
    cases: EvalCases


def is_target(log: EventLog, min_action: int = CLICK) -> np.ndarray:
    return log.action >= min_action


def leave_one_out(log: EventLog, holdout: int = 1, min_action: int = CLICK, max_cases: int | None = None,
                  seed: int = 0) -> Split:
    """Each user's last target event is the target (`holdout=2`: the one before it, for validation).

    Training keeps each user's events before the target's session; users with fewer than `holdout + 1` target
    events are not evaluated but keep all their events for training. With `max_cases`, a sample of that many
    users (the ones `sample_cases` would draw with `seed`) is evaluated, and only they lose their target: a
    validation holdout that cuts every user's last target would take a fifth of a short-visit log from training
    to validate on a few thousand of them.
    """
    positive = np.flatnonzero(is_target(log, min_action))
    user_of_positive = log.user[positive]
    group_end = np.flatnonzero(np.r_[user_of_positive[1:] != user_of_positive[:-1], True])
    group = np.searchsorted(group_end, np.arange(len(positive)))
    rank_from_last = group_end[group] - np.arange(len(positive)) + 1  # 1 = the user's last target event
    group_size = np.diff(np.r_[-1, group_end])
    chosen = positive[(rank_from_last == holdout) & (group_size[group] > holdout)]
    if max_cases is not None and len(chosen) > max_cases:
        chosen = chosen[_sample(len(chosen), max_cases, seed)]
    # Drop every event from the start of each chosen target's session (what was shown with it is not known
    # before the request) to its user's last event.
    session_start = log.session_offsets[log.session[chosen]]
    user_end = log.user_offsets[np.searchsorted(log.user_offsets, chosen, side="right")]
    boundary = np.zeros(len(log) + 1, dtype=np.int64)
    np.add.at(boundary, session_start, 1)
    np.add.at(boundary, user_end, -1)
    cut = np.cumsum(boundary[:-1]) > 0
    cases = EvalCases(
        user=log.user[chosen], context=log.context[chosen], scenario=log.scenario[chosen],
        request_time=log.timestamp[chosen], target_offsets=np.arange(len(chosen) + 1, dtype=np.int64),
        target_items=log.item[chosen],
    )
    return Split("loo", log.take(~cut), cases)


def temporal_split(log: EventLog, split_time: int | None = None, test_fraction: float = 0.1,
                   min_action: int = CLICK, include_cold_users: bool = False) -> Split:
    """Train on sessions that start before `split_time`; predict each user's next session after it.

    Without `split_time`, it is the time that leaves `test_fraction` of the events after it. Users with no
    history before the split (cold users) are evaluated only with `include_cold_users`.
    """
    if not log.has_timestamp:
        raise ValueError("the temporal protocol needs timestamps; use leave-one-out for this file")
    if split_time is None:
        split_time = holdout_time(log, test_fraction)
    session_after = log.session_start >= split_time
    event_after = session_after[log.session]
    train = log.take(~event_after)
    positive_session = np.bincount(log.session[is_target(log, min_action)], minlength=len(session_after)) > 0
    candidates = np.flatnonzero(session_after & positive_session)
    session_users = log.session_user[candidates]
    first_of_user = np.ones(len(candidates), dtype=bool)  # no candidate at all is a possible window
    first_of_user[1:] = session_users[1:] != session_users[:-1]
    first_per_user = candidates[first_of_user]
    warm = np.isin(log.session_user[first_per_user], train.active_users)
    target_sessions = first_per_user if include_cold_users else first_per_user[warm]
    return Split("temporal", train, _session_cases(log, target_sessions, min_action))


def holdout_time(log: EventLog, test_fraction: float = 0.1) -> int:
    """The time that leaves `test_fraction` of the events after it, and at least one session starting at it."""
    split_time = int(np.quantile(log.timestamp, 1.0 - test_fraction))
    if not (log.session_start >= split_time).any():  # the quantile fell inside the sessions that started last
        split_time = int(log.session_start.max())
    return split_time


def _session_cases(log: EventLog, sessions: np.ndarray, min_action: int) -> EvalCases:
    """Cases for the given (ascending) sessions: their distinct target items."""
    acted = np.isin(log.session, sessions) & (log.action >= min_action)
    pair_keys = np.unique(log.session[acted] * log.n_items + log.item[acted])
    lengths = np.bincount(np.searchsorted(sessions, pair_keys // log.n_items), minlength=len(sessions))
    return EvalCases(
        user=log.session_user[sessions], context=log.session_context[sessions],
        scenario=log.session_scenario[sessions], request_time=log.session_start[sessions],
        target_offsets=np.r_[0, np.cumsum(lengths)].astype(np.int64),
        target_items=(pair_keys % log.n_items).astype(np.int32),
    )


def viewed_items(train: EventLog, users: np.ndarray, min_action: int = CLICK) -> tuple[np.ndarray, np.ndarray]:
    """CSR (offsets, items): the distinct items each of `users` acted on in `train` (what filter_viewed drops)."""
    acted = is_target(train, min_action)
    pair_keys = np.unique(train.user[acted].astype(np.int64) * train.n_items + train.item[acted])
    pair_user, pair_item = pair_keys // train.n_items, (pair_keys % train.n_items).astype(np.int32)
    starts = np.searchsorted(pair_user, users, side="left")
    ends = np.searchsorted(pair_user, users, side="right")
    lengths = ends - starts
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    return offsets, pair_item[gather]


def sample_cases(split: Split, max_cases: int, seed: int = 0) -> Split:
    """The split with at most `max_cases` cases, drawn without replacement (same seed, same cases)."""
    cases = split.cases
    if len(cases) <= max_cases:
        return split
    chosen = _sample(len(cases), max_cases, seed)
    lengths = cases.n_targets[chosen]
    starts = cases.target_offsets[chosen]
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    sampled = EvalCases(
        user=cases.user[chosen], context=cases.context[chosen], scenario=cases.scenario[chosen],
        request_time=cases.request_time[chosen], target_offsets=offsets, target_items=cases.target_items[gather],
    )
    return Split(split.protocol, split.train, sampled)


def _sample(n: int, size: int, seed: int) -> np.ndarray:
    """`size` of `range(n)`, ascending, drawn without replacement (same seed, same draw)."""
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
