"""Requests in a context the worker did not precompute, answered from the user's stored prefix state: the same
vector as encoding the whole history, and never from a prefix state of another model or another history. Live
service, real Redis, onnxruntime (both graphs) and FAISS."""

from __future__ import annotations

import numpy as np
import pytest

from contract.prefix_state import PrefixState
from service.models import RecallRequest
from service.recall import answer, encode_online, plan_recalls
from tests.service.test_service import recall, user_events, wait_for_vectors
from tests.support.service import post_events

pytestmark = pytest.mark.integration


def other_contexts(model, events: list[dict], n: int) -> list[str]:
    """Known contexts that are not the user's last one (whose vector is precomputed)."""
    last = events[-1]["context"]
    return [c for c in sorted(model.small_vocab_codes["contexts"]) if c != last][:n]


def test_a_new_context_is_one_query_step_and_gives_the_full_encoders_answer(live_service, small_world):
    services = live_service.app.state.services
    users = [7, 11, 21]
    with live_service.client() as client:
        for user in users:
            post_events(client, user_events(small_world, user_id=user))
        for user in users:
            wait_for_vectors(client, user)
        model = services.holder.current
        assert model.query_step is not None
        served = recall(client, user_id=7, context=other_contexts(model, user_events(small_world, 7), 1)[0], k=20)
        last_scenario = user_events(small_world, 7)[-1]["scenario"]
        scenario = next(s for s in sorted(model.small_vocab_codes["scenarios"]) if s != last_scenario)
        scenario_only = recall(client, user_id=7, scenario=scenario, k=20)  # the last context, another scenario
        requests = [RecallRequest(user_id=user, context=context, scenario=scenario, k=50, filter_viewed=False)
                    for user in users for context in other_contexts(model, user_events(small_world, user), 3)
                    for scenario in (None, "search")]
    assert served["vector_source"] == scenario_only["vector_source"] == "query_step"
    assert served["fallback"] is None
    plans = plan_recalls(model, services.client, services.keys, requests)
    assert all(plan.vector is None and plan.prefix is not None for plan in plans)
    stepped = encode_online(model, plans)  # one query-step call for all of them
    for plan in plans:
        plan.prefix = None  # the same requests, at the same request time, with the whole history encoded
    full = encode_online(model, plans)
    cosine = (stepped * full).sum(-1) / np.linalg.norm(stepped, axis=-1) / np.linalg.norm(full, axis=-1)
    assert cosine.min() >= 0.9999
    assert np.abs(stepped - full).max() <= 2e-3
    for plan, step_vector, full_vector in zip(plans, stepped, full, strict=True):
        step_items = [item["item_id"] for item in answer(model, plan, step_vector)["items"]]
        full_items = [item["item_id"] for item in answer(model, plan, full_vector)["items"]]
        assert len(set(step_items[:10]) & set(full_items[:10])) >= 9
        assert len(set(step_items) & set(full_items)) >= 48
    # The contexts do change the vectors: each user's rows differ.
    assert np.abs(stepped[0] - stepped[2]).max() > 1e-3


def test_a_prefix_state_is_kept_for_the_ttl_and_never_used_for_another_history_or_model(live_service, small_world):
    services = live_service.app.state.services
    client_redis, keys = services.client, services.keys
    events = user_events(small_world, user_id=33)
    with live_service.client() as client:
        post_events(client, events)
        wait_for_vectors(client, 33)
        model = services.holder.current
        context = other_contexts(model, events, 1)[0]
        key = keys.prefix_state("33")
        ttl_ms = client_redis.pttl(key)
        assert 0 < ttl_ms <= services.settings.prefix_ttl_s * 1000
        raw = client_redis.get(key)
        stored = PrefixState.from_bytes(raw)
        assert stored.model_version == model.model_version
        assert stored.n_tokens == stored.buckets.shape[0] > 1
        assert recall(client, user_id=33, context=context, k=5)["vector_source"] == "query_step"
        # The request's recent events make another history: the whole of it is encoded.
        recent = recall(client, user_id=33, context=context, k=5,
                        recent_events=[{"item_id": events[0]["item_id"], "action": "pay"}])
        assert recent["vector_source"] == "online"
        sources = {}
        for name, changed in (("another model", {"model_version": "0" * 16}),
                              ("another history", {"last_id": "1-0"})):
            client_redis.set(key, PrefixState(**{**stored.__dict__, **changed}).to_bytes())
            sources[name] = recall(client, user_id=33, context=context, k=5)["vector_source"]
        client_redis.set(key, raw[: len(raw) // 2])
        sources["truncated"] = recall(client, user_id=33, context=context, k=5)["vector_source"]
        client_redis.delete(key)
        sources["expired"] = recall(client, user_id=33, context=context, k=5)["vector_source"]
    assert sources == dict.fromkeys(("another model", "another history", "truncated", "expired"), "online")


def test_prefix_states_round_trip_and_refuse_what_they_cannot_read():
    rng = np.random.default_rng(0)
    state = PrefixState(model_version="abc", last_id="17-3", previous_start=1_700_000_000, session_pos=5,
                        keys=rng.normal(size=(2, 2, 7, 8)).astype(np.float16),
                        values=rng.normal(size=(2, 2, 7, 8)).astype(np.float16),
                        buckets=np.arange(7, dtype=np.int8), previous=rng.normal(size=16).astype(np.float32))
    raw = state.to_bytes()
    back = PrefixState.from_bytes(raw)
    assert (back.model_version, back.last_id, back.previous_start, back.session_pos) == ("abc", "17-3",
                                                                                        1_700_000_000, 5)
    for name in ("keys", "values", "buckets", "previous"):
        assert np.array_equal(getattr(back, name), getattr(state, name))
    assert len(raw) < 4 * 2 * 7 * 16 + 7 + 4 * 16 + 200  # float16 keys and values, int8 buckets, a short header
    for broken in (raw[:-1], raw + b"x", b"", b"\x05\x00\x00\x00{}", raw.replace(b'"format":1', b'"format":9')):
        assert PrefixState.from_bytes(broken) is None


def test_a_context_free_model_serves_every_context_from_its_one_precomputed_vector(small_world, tmp_path):
    """The items layout (and SASRec, BERT4Rec) reads the user vector where the request's token changes nothing:
    the worker stores one vector and no prefix state, and a request in any context is answered from it."""
    from index_builder.build import build_and_publish
    from model_export.export import export_run
    from service.store.user_state import read_state
    from tests.support.runs import train_tiny_run
    from tests.support.service import LiveService, service_settings

    directory, _ = small_world
    run = train_tiny_run(directory, tmp_path / "run", epochs=0, layout="items")
    export_run(run, tmp_path / "artifacts")
    build_and_publish(tmp_path / "artifacts", tmp_path / "index")
    service = LiveService(service_settings(tmp_path)).start()
    try:
        services = service.app.state.services
        events = user_events(small_world, user_id=7)
        with service.client() as client:
            post_events(client, events)
            wait_for_vectors(client, 7)
            model = services.holder.current
            answers = [recall(client, user_id=7, context=context, k=10)
                       for context in [*other_contexts(model, events, 2), "no-such-context"]]
        state = read_state(services.client, services.keys, "7", model.encoder.dim)
        has_prefix_state = services.client.exists(services.keys.prefix_state("7"))
    finally:
        service.stop()
    assert model.schema.context_free and model.query_step is None
    assert {answer["vector_source"] for answer in answers} == {"precomputed"}
    assert len(state.contexts) == 1 and not has_prefix_state
    full = model.encode([state.history], [other_contexts(model, events, 1)[0]], [None], np.array([0]))[0]
    assert np.abs(full - state.vectors[0]).max() <= 1e-5
