"""The worker's stored histories: session rules of the data contract, the encoder's window, and encoder inputs
identical to the ones training builds from the same events."""

from __future__ import annotations

import numpy as np
import pandas as pd

from contract.columns import ACTION_CODES
from contract.manifests import FeatureSchema
from contract.tokens import TOKEN_FEATURES
from service.history import apply_event, encoder_inputs, new_history, viewed_items

SCHEMA = FeatureSchema(max_len=12, max_items_per_session=3, session_gap_s=1800, has_timestamp=True,
                       with_context_tokens=True)


def event(item, timestamp, action="click", session_id=None, context="home"):
    return {"user_id": "u", "item_id": str(item), "timestamp": timestamp, "action": ACTION_CODES[action],
            "context": context, "scenario": None, "session_id": session_id, "event_id": f"{item}-{timestamp}"}


def test_sessions_split_on_the_gap_or_the_session_id_and_keep_the_strongest_action():
    history = new_history()
    for e in (event(1, 0), event(2, 100), event(1, 200, "pay"), event(3, 5000), event(4, 5100, session_id="s9"),
              event(5, 5200, session_id="s9")):
        apply_event(history, e, SCHEMA)
    sessions = [[pair for pair in s["items"]] for s in history["sessions"]]
    assert sessions == [[["1", ACTION_CODES["pay"]], ["2", 1]], [["3", 1]], [["4", 1], ["5", 1]]]
    assert [s["start"] for s in history["sessions"]] == [0, 5000, 5100]


def test_history_keeps_only_what_the_encoder_reads_but_remembers_viewed_items():
    history = new_history()
    for n in range(30):  # 30 one-item sessions: 2 tokens each, 11 token budget -> the last 5 sessions
        apply_event(history, event(n + 1, 3600 * n), SCHEMA)
    assert [s["items"][0][0] for s in history["sessions"]] == [str(n) for n in range(26, 31)]
    assert viewed_items(history) == [str(n) for n in range(1, 31)]


def test_without_timestamps_every_event_is_its_own_session():
    schema = SCHEMA.model_copy(update={"has_timestamp": False})
    history = new_history()
    for n in range(3):
        apply_event(history, event(n + 1, 0), schema)
    assert len(history["sessions"]) == 3


def test_the_items_layout_keeps_every_event_its_own_session_in_order():
    schema = SCHEMA.model_copy(update={"with_context_tokens": False, "event_sessions": True})
    history = new_history()
    for e in (event(5, 0), event(3, 60), event(5, 120, "cart"), event(1, 130, session_id="s1"),
              event(2, 140, session_id="s1")):
        apply_event(history, e, schema)
    # clicks a minute apart, even under one session id, stay separate tokens in the order they came
    assert [s["items"] for s in history["sessions"]] == [[["5", 1]], [["3", 1]], [["5", 2]], [["1", 1]], [["2", 1]]]


def test_encoder_inputs_equal_what_training_builds_from_the_same_events(small_world, tiny_artifacts):
    from contract.events import load_events
    from service.ingest import normalise
    from service.models import Event
    from training.recommender import EncoderRecommender
    from training.run_dir import load_run

    directory, _ = small_world
    run_path, _ = tiny_artifacts
    run = load_run(run_path)
    schema = FeatureSchema(max_len=run.config.model.max_len,
                           max_items_per_session=run.config.model.max_items_per_session, session_gap_s=1800,
                           has_timestamp=True, with_context_tokens=True)
    events = pd.read_parquet(directory / "events.parquet")
    # Two ordinary users and the one with the most events: the window cannot hold their whole history, and the
    # oldest session kept must read its gap from the one dropped, as training does.
    users = [4, 40, int(events.user_id.value_counts().index[0])]
    log = load_events(directory / "events.parquet", directory / "items.parquet", vocabs=run.vocabs, grow_vocabs=False)
    histories = []
    for user in users:
        rows = events[events.user_id == user].sort_values(["session_id", "timestamp"], kind="stable")
        history = new_history()
        for r in rows.itertuples():
            apply_event(history, normalise(Event(user_id=int(r.user_id), item_id=int(r.item_id),
                                                 timestamp=int(r.timestamp), action=str(r.action),
                                                 context=str(r.context), scenario=str(r.scenario),
                                                 session_id=int(r.session_id)), 0.0), schema)
        histories.append(history)
    assert "previous_start" in histories[2]
    request_time = np.full(3, int(events.timestamp.max()) + 3600)
    served = encoder_inputs(histories, ["home", "search:sakakax", None], ["home", "search", None], request_time,
                            run.vocabs, schema)
    codes = np.array([run.vocabs.users.code_of(u) for u in users])
    contexts = np.array([run.vocabs.contexts.code_of(c) for c in ("home", "search:sakakax")] + [0])
    scenarios = np.array([run.vocabs.scenarios.code_of(s) for s in ("home", "search")] + [0])
    trained = EncoderRecommender(run.model, log).inputs(codes, contexts, scenarios, request_time)
    for name in TOKEN_FEATURES:
        np.testing.assert_array_equal(served[name], trained[name], err_msg=name)
