"""How events become encoder inputs: the feature schema shared by training, export and the near-line worker.

Torch-free on purpose: the serving side builds the very same arrays from a user's stored history.

TBGRecall sequence of a user: [c(1), items of session 1, c(2), items of session 2, ..., c(K+1)], every token
described by the integer features in `TOKEN_FEATURES`:
- token_type: 0 padding, 1 context token, 2 item token
- item: item code (0 on context tokens); action: 1 + action code on item tokens (0 elsewhere)
- context, scenario: codes of the session's context (context tokens only) and scenario (both token types)
- hour (1-24), weekday (1-7), gap (1.. log2 buckets of minutes since the user's previous session): 0 = unknown
- session_pos: the session's index inside the window (what session-wise RoPE rotates by)
Items inside a session are distinct; their action is the strongest seen; at most `max_items_per_session` are
kept, strongest first. Sequences are left-padded, so the query token is always the last position.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from contract.columns import CLICK
from contract.events import EventLog

TOKEN_FEATURES = ("token_type", "item", "action", "context", "scenario", "hour", "weekday", "gap", "session_pos")
PAD, CONTEXT_TOKEN, ITEM_TOKEN = 0, 1, 2
N_HOURS, N_WEEKDAYS, N_GAPS, N_ACTIONS = 25, 8, 20, 5


@dataclass
class SessionTable:
    """One row per session (sorted by user, then time) and the distinct items kept for it."""

    user: np.ndarray  # (S,) user codes
    context: np.ndarray  # (S,)
    scenario: np.ndarray  # (S,)
    start: np.ndarray  # (S,) unix seconds
    has_time: bool
    item_offsets: np.ndarray  # (S+1,)
    item: np.ndarray  # (I,) item codes, strongest action first within a session
    action: np.ndarray  # (I,) action codes

    @property
    def n_sessions(self) -> int:
        return len(self.user)

    def user_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """(users, offsets): each user's sessions are rows offsets[i]:offsets[i+1]."""
        starts = np.flatnonzero(np.r_[True, self.user[1:] != self.user[:-1]]) if len(self.user) else np.zeros(0, int)
        return self.user[starts], np.r_[starts, len(self.user)].astype(np.int64)


def session_table(log: EventLog, max_items_per_session: int) -> SessionTable:
    return build_session_table(log.session, log.user, log.item, log.action, log.context, log.scenario,
                               log.timestamp, log.has_timestamp, max_items_per_session)


def build_session_table(session: np.ndarray, user: np.ndarray, item: np.ndarray, action: np.ndarray,
                        context: np.ndarray, scenario: np.ndarray, timestamp: np.ndarray, has_time: bool,
                        max_items_per_session: int) -> SessionTable:
    """From events sorted by user and session (session ids non-decreasing) to a `SessionTable`."""
    first_event = np.flatnonzero(np.r_[True, session[1:] != session[:-1]]) if len(session) else np.zeros(0, int)
    dense_session = np.cumsum(np.r_[True, session[1:] != session[:-1]]) - 1 if len(session) else session
    # Strongest action per (session, item), then the strongest items first within each session.
    order = np.lexsort((-action.astype(np.int64), item, dense_session))
    pair_session, pair_item, pair_action = dense_session[order], item[order], action[order]
    is_first = np.r_[True, (pair_session[1:] != pair_session[:-1]) | (pair_item[1:] != pair_item[:-1])] \
        if len(pair_session) else np.zeros(0, dtype=bool)
    pair_session, pair_item, pair_action = pair_session[is_first], pair_item[is_first], pair_action[is_first]
    order = np.lexsort((pair_item, -pair_action.astype(np.int64), pair_session))
    pair_session, pair_item, pair_action = pair_session[order], pair_item[order], pair_action[order]
    rank = np.arange(len(pair_session)) - np.searchsorted(pair_session, pair_session)
    keep = rank < max_items_per_session
    pair_session, pair_item, pair_action = pair_session[keep], pair_item[keep], pair_action[keep]
    counts = np.bincount(pair_session, minlength=len(first_event))
    return SessionTable(
        user=user[first_event], context=context[first_event], scenario=scenario[first_event],
        start=timestamp[first_event], has_time=has_time,
        item_offsets=np.r_[0, np.cumsum(counts)].astype(np.int64),
        item=pair_item.astype(np.int64), action=pair_action.astype(np.int64),
    )


def time_features(seconds: np.ndarray, previous: np.ndarray | None, has_time: bool) -> tuple[np.ndarray, ...]:
    """(hour, weekday, gap) codes; `previous` is the user's previous session start (negative: none)."""
    seconds = np.asarray(seconds, dtype=np.int64)
    if not has_time:
        zeros = np.zeros(len(seconds), dtype=np.int64)
        return zeros, zeros, zeros
    hour = (seconds // 3600) % 24 + 1
    weekday = (seconds // 86_400 + 3) % 7 + 1  # 1970-01-01 was a Thursday; Monday = 1
    gap = np.zeros(len(seconds), dtype=np.int64)
    if previous is not None:
        known = previous >= 0
        minutes = np.maximum(seconds - previous, 0) / 60.0
        gap[known] = 1 + np.minimum(np.floor(np.log2(1.0 + minutes[known])), N_GAPS - 2).astype(np.int64)
    return hour, weekday, gap


@dataclass
class TokenTable:
    """Flat TBGRecall tokens of every session: session s owns rows offsets[s]:offsets[s+1]."""

    offsets: np.ndarray  # (S+1,)
    features: dict[str, np.ndarray]  # name -> (N,) int64; session_pos holds the absolute session index


def build_tokens(table: SessionTable, with_context: bool = True) -> TokenTable:
    """TBGRecall tokens (`with_context`): every session's context token and items. Without: the acted items
    only (click, cart, pay), the item sequence SASRec and BERT4Rec read."""
    keep_item = np.ones(len(table.item), dtype=bool) if with_context else table.action >= CLICK
    session_of_item = np.repeat(np.arange(table.n_sessions), np.diff(table.item_offsets))
    n_items = np.bincount(session_of_item[keep_item], minlength=table.n_sessions)
    per_session = n_items + (1 if with_context else 0)
    offsets = np.r_[0, np.cumsum(per_session)].astype(np.int64)
    n_tokens = int(offsets[-1])
    session_of_token = np.repeat(np.arange(table.n_sessions), per_session)
    is_context = np.zeros(n_tokens, dtype=bool)
    if with_context:
        is_context[offsets[:-1]] = True
    previous = np.r_[-1, table.start[:-1]] if table.n_sessions else np.zeros(0, dtype=np.int64)
    previous[np.r_[True, table.user[1:] != table.user[:-1]] if table.n_sessions else []] = -1
    hour, weekday, gap = time_features(table.start, previous, table.has_time)
    features = {name: np.zeros(n_tokens, dtype=np.int64) for name in TOKEN_FEATURES}
    features["token_type"][:] = np.where(is_context, CONTEXT_TOKEN, ITEM_TOKEN)
    features["item"][~is_context] = table.item[keep_item]
    features["action"][~is_context] = table.action[keep_item] + 1
    if with_context:
        features["context"][is_context] = table.context
    features["scenario"][:] = table.scenario[session_of_token]
    for name, values in (("hour", hour), ("weekday", weekday), ("gap", gap)):
        features[name][:] = values[session_of_token]
    features["session_pos"][:] = session_of_token
    return TokenTable(offsets=offsets, features=features)


def training_windows(table: SessionTable, tokens: TokenTable, max_len: int) -> np.ndarray:
    """(W, 2) session ranges [first, last) of every training window: each user's history cut, from the most
    recent session backwards, into runs of whole sessions of at most `max_len` tokens."""
    windows = []
    _, user_offsets = table.user_ranges()
    session_tokens = np.diff(tokens.offsets)
    for first, end in itertools.pairwise(user_offsets):
        last = end
        while last > first:
            start = _first_session_fitting(session_tokens, first, last, max_len)
            if start == last:  # a session longer than max_len (cannot happen with the item cap); skip it
                start = last - 1
            else:
                windows.append((start, last))
            last = start
    return np.array(windows, dtype=np.int64).reshape(-1, 2)


def _first_session_fitting(session_tokens: np.ndarray, first: int, last: int, budget: int) -> int:
    """The earliest session s >= first such that sessions s..last-1 hold at most `budget` tokens."""
    start = last
    while start > first and session_tokens[start - 1] <= budget:
        budget -= session_tokens[start - 1]
        start -= 1
    return start


def collate(tokens: TokenTable, windows: np.ndarray, extra: dict[str, np.ndarray] | None = None,
            out: Callable[[int, int], dict[str, np.ndarray]] | None = None) -> dict[str, np.ndarray]:
    """Left-padded (B, T) int64 feature arrays for session windows; `extra` appends one token per row (the
    next context token at inference), given as name -> (B,) arrays; `out(B, T)` supplies zeroed arrays to
    fill instead of new ones (preallocated buffers)."""
    lengths = tokens.offsets[windows[:, 1]] - tokens.offsets[windows[:, 0]]
    # At least two positions with a query token: SASRec reads the one before it.
    width = int(lengths.max(initial=0)) + 1 if extra is not None else int(lengths.max(initial=0))
    width = max(width, 2 if extra is not None else 1)
    batch = out(len(windows), width) if out is not None else \
        {name: np.zeros((len(windows), width), dtype=np.int64) for name in TOKEN_FEATURES}
    for row, ((first, last), length) in enumerate(zip(windows, lengths, strict=True)):
        lo, hi = tokens.offsets[first], tokens.offsets[last]
        end = width - (1 if extra is not None else 0)
        for name in TOKEN_FEATURES:
            batch[name][row, end - length:end] = tokens.features[name][lo:hi]
        batch["session_pos"][row, end - length:end] -= first
        if extra is not None:
            for name in TOKEN_FEATURES:
                batch[name][row, -1] = extra[name][row]
            batch["session_pos"][row, -1] = last - first
    return batch


def clip_to_model(batch: dict[str, np.ndarray], sizes: dict[str, int]) -> dict[str, np.ndarray]:
    """Codes the model has no row for (ids first seen after training) become 0: unknown item, default context."""
    for name, vocab in (("item", "items"), ("context", "contexts"), ("scenario", "scenarios")):
        values = batch[name]
        values[values >= sizes[vocab]] = 0
    return batch


def history_windows(table: SessionTable, tokens: TokenTable, users: np.ndarray, max_len: int) -> np.ndarray:
    """(B, 2) session ranges: each user's most recent whole sessions that fit `max_len - 1` tokens (one is left
    for the query token); an empty range for a user without history."""
    table_users, user_offsets = table.user_ranges()
    windows = np.zeros((len(users), 2), dtype=np.int64)
    if len(table_users) == 0:
        return windows
    position = np.minimum(np.searchsorted(table_users, users), len(table_users) - 1)
    session_tokens = np.diff(tokens.offsets)
    for row in np.flatnonzero(table_users[position] == users):
        last = user_offsets[position[row] + 1]
        windows[row] = (_first_session_fitting(session_tokens, user_offsets[position[row]], last, max_len - 1), last)
    return windows


def query_tokens(table: SessionTable, windows: np.ndarray, context: np.ndarray, scenario: np.ndarray,
                 request_time: np.ndarray) -> dict[str, np.ndarray]:
    """The next context token of each row (name -> (B,)): the request's context, scenario and time features."""
    has_history = windows[:, 1] > windows[:, 0]
    previous = np.where(has_history, np.r_[table.start, -1][windows[:, 1] - 1], -1)  # row -1: no history
    hour, weekday, gap = time_features(request_time, previous, table.has_time)
    zeros = np.zeros(len(windows), dtype=np.int64)
    return {"token_type": zeros + CONTEXT_TOKEN, "item": zeros, "action": zeros, "context": context.astype(np.int64),
            "scenario": scenario.astype(np.int64), "hour": hour, "weekday": weekday, "gap": gap,
            "session_pos": zeros}
