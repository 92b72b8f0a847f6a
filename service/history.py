"""A user's recent sessions as the near-line worker keeps them in Redis, and their encoder inputs.

Histories hold original ids, not codes, so a new model version can re-encode them unchanged. Sessions follow the
data contract: an event joins the user's last session when it carries that session's `session_id`, or, without
one, when it comes within `session_gap_s` of that session's last event. Only what the encoder can read is kept:
the most recent sessions whose tokens fit `max_len`.

Encoder inputs are built by the very functions training uses (`contract.tokens`), so serving and training
agree token for token.
"""

from __future__ import annotations

import numpy as np
import orjson

from contract.columns import CLICK
from contract.manifests import FeatureSchema
from contract.tokens import (
    TokenTable,
    build_session_table,
    build_tokens,
    collate,
    history_windows,
    query_tokens,
    time_features,
)
from contract.vocab import Vocabularies

STORED_ITEMS_FACTOR = 4  # keep up to 4x the encoder's per-session cap: the encoder picks the strongest itself
MAX_VIEWED = 1000  # filter_viewed remembers this many distinct recent items, beyond what the encoder reads


def new_history() -> dict:
    return {"sessions": [], "viewed": []}


def load_history(raw: bytes | None) -> dict:
    return orjson.loads(raw) if raw else new_history()


def dump_history(history: dict) -> bytes:
    return orjson.dumps(history)


def apply_event(history: dict, event: dict, schema: FeatureSchema) -> None:
    """Add one normalised event (see `service.ingest.normalise`) to `history`, in place."""
    sessions = history["sessions"]
    last = sessions[-1] if sessions else None
    timestamp = event["timestamp"]
    if schema.event_sessions:
        same_session = False
    elif event.get("session_id") is not None:
        same_session = last is not None and last.get("id") == event["session_id"]
    elif not schema.has_timestamp:  # a model trained without time reads every event as its own session
        same_session = False
    else:
        same_session = last is not None and last.get("id") is None and timestamp - last["last"] <= schema.session_gap_s
    if not same_session:
        last = {"id": event.get("session_id"), "start": timestamp, "last": timestamp,
                "context": event["context"], "scenario": event["scenario"], "items": []}
        sessions.append(last)
    last["last"] = max(last["last"], timestamp)
    items = last["items"]
    for pair in items:
        if pair[0] == event["item_id"]:
            pair[1] = max(pair[1], event["action"])  # a session item's label is its strongest action
            break
    else:
        items.append([event["item_id"], event["action"]])
        if len(items) > STORED_ITEMS_FACTOR * schema.max_items_per_session:
            weakest = min(range(len(items)), key=lambda i: items[i][1])
            items.pop(weakest)
    _truncate(history, schema)
    if event["action"] < CLICK:  # an item only shown to the user may still be recommended, as offline
        return
    viewed = history.setdefault("viewed", [])
    if event["item_id"] in viewed:
        viewed.remove(event["item_id"])
    viewed.append(event["item_id"])
    del viewed[:-MAX_VIEWED]


def _truncate(history: dict, schema: FeatureSchema) -> None:
    """Drop the oldest sessions the encoder could not read anyway (one token stays for the query), remembering the
    start of the last one dropped: the oldest kept session's gap feature is measured from it, as in training."""
    budget, keep = schema.max_len - 1, 0
    for session in reversed(history["sessions"]):
        tokens = min(len(session["items"]), schema.max_items_per_session) + int(schema.with_context_tokens)
        if tokens > budget:
            break
        budget -= tokens
        keep += 1
    dropped = len(history["sessions"]) - keep
    if dropped:
        history["previous_start"] = history["sessions"][dropped - 1]["start"]
        del history["sessions"][:dropped]


def viewed_items(history: dict) -> list[str]:
    """The user's distinct recent items acted on (clicked, carted or paid; as evaluation.splits.viewed_items
    reads them offline), oldest first, more than the sessions the encoder reads."""
    return history.get("viewed", [])


def last_context(history: dict) -> tuple[str | None, str | None]:
    sessions = history["sessions"]
    return (sessions[-1]["context"], sessions[-1]["scenario"]) if sessions else (None, None)


def encoder_inputs(histories: list[dict], contexts: list[str | None], scenarios: list[str | None],
                   request_time: np.ndarray, vocabs: Vocabularies, schema: FeatureSchema,
                   out=None) -> dict[str, np.ndarray]:
    """(B, T) encoder inputs: row b is histories[b] followed by the query token of (contexts[b], scenarios[b])
    at request_time[b]. Ids the model never saw become code 0 (unknown item, default context)."""
    rows, sessions = [], []
    for row, history in enumerate(histories):
        for session in history["sessions"]:
            rows.append(row)
            sessions.append(session)
    n_events = [len(session["items"]) for session in sessions]
    event_session = np.repeat(np.arange(len(sessions), dtype=np.int64), n_events)
    event_user = np.repeat(np.asarray(rows, dtype=np.int64), n_events)
    pairs = [pair for session in sessions for pair in session["items"]]
    item = codes_of(vocabs.items, [pair[0] for pair in pairs])
    action = np.fromiter((pair[1] for pair in pairs), dtype=np.int64, count=len(pairs))
    context = np.repeat(codes_of(vocabs.contexts, [s["context"] for s in sessions]), n_events)
    scenario = np.repeat(codes_of(vocabs.scenarios, [s["scenario"] for s in sessions]), n_events)
    start = np.repeat(np.fromiter((s["start"] for s in sessions), dtype=np.int64, count=len(sessions)), n_events)
    table = build_session_table(event_session, event_user, item, action, context, scenario, start,
                                schema.has_timestamp, schema.max_items_per_session)
    tokens = build_tokens(table, with_context=schema.with_context_tokens)
    _gaps_from_dropped_sessions(tokens, histories, schema.has_timestamp)
    windows = history_windows(table, tokens, np.arange(len(histories), dtype=np.int64), schema.max_len)
    query = query_tokens(table, windows, codes_of(vocabs.contexts, contexts), codes_of(vocabs.scenarios, scenarios),
                         np.asarray(request_time, dtype=np.int64))
    return collate(tokens, windows, query, out=out)


def _gaps_from_dropped_sessions(tokens: TokenTable, histories: list[dict], has_time: bool) -> None:
    """The gap feature of each history's oldest kept session, from the session `_truncate` dropped before it
    (build_tokens, seeing no earlier session, leaves it unknown): training reads it from the whole log."""
    first_session = 0
    for history in histories:
        sessions = history["sessions"]
        if sessions and history.get("previous_start") is not None:
            _, _, gap = time_features(np.array([sessions[0]["start"]]), np.array([history["previous_start"]]),
                                      has_time)
            tokens.features["gap"][tokens.offsets[first_session]:tokens.offsets[first_session + 1]] = gap[0]
        first_session += len(sessions)


def codes_of(vocab, ids: list) -> np.ndarray:
    """Codes of original ids in `vocab` (any of them); 0 for ids it does not know."""
    if not ids:
        return np.zeros(0, dtype=np.int64)
    return vocab.lookup(np.asarray(["" if value is None else str(value) for value in ids], dtype=object))
