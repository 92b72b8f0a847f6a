"""What integrators build on /v1/recall beyond one user's top-k: batches, allow-lists, the context the model
read, and recent events sent with the request. Live service, real Redis, onnxruntime and FAISS."""

from __future__ import annotations

import pytest

from service.models import RecallBatchResponse
from tests.service.test_service import recall, user_events, wait_for_vectors
from tests.support.service import post_events

pytestmark = pytest.mark.integration


def comparable(answer: dict) -> dict:
    """An answer without its clock-dependent age, scores rounded (a batch encodes rows together)."""
    items = [(item["item_id"], round(item["score"], 4)) for item in answer["items"]]
    return {**{key: value for key, value in answer.items() if key != "user_vector_age_ms"}, "items": items}


def test_a_batch_answers_each_request_as_its_single_call_does(live_service, small_world):
    events = user_events(small_world, user_id=7) + user_events(small_world, user_id=11)
    with live_service.client() as client:
        post_events(client, events)
        wait_for_vectors(client, 7)
        wait_for_vectors(client, 11)
        requests = [{"user_id": 7, "k": 20}, {"user_id": 11, "k": 5, "context": "search:shoes"},
                    {"user_id": "never-seen", "k": 10}, {"user_id": 7, "k": 10, "filter_viewed": False,
                                                          "allowed_item_ids": list(range(1, 60))},
                    {"user_id": 11, "k": 10, "recent_events": [{"item_id": 3, "action": "cart"}]}]
        batch = client.post("/v1/recall/batch", json={"requests": requests})
        singles = [recall(client, **request) for request in requests]
        too_many = client.post("/v1/recall/batch", json={"requests": [{"user_id": 1}] * 257})
    assert batch.status_code == 200, batch.text
    results = RecallBatchResponse.model_validate_json(batch.content).model_dump()["results"]
    assert [comparable(answer) for answer in results] == [comparable(answer) for answer in singles]
    assert {answer["vector_source"] for answer in results} == {"precomputed", "online", "cold"}
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == ["body", "requests"]


def test_the_allow_list_is_applied_inside_the_search(live_service, small_world):
    with live_service.client() as client:
        post_events(client, user_events(small_world, user_id=21))
        wait_for_vectors(client, 21)
        everything = [item["item_id"] for item in recall(client, user_id=21, k=1000, filter_viewed=False)["items"]]
        # The user's least likely items: a top-k cut after an unfiltered search would find none of them.
        allowed = everything[-30:]
        answer = recall(client, user_id=21, k=10, filter_viewed=False, allowed_item_ids=[*allowed, "no-such-item"])
        few = recall(client, user_id=21, k=10, filter_viewed=False, allowed_item_ids=allowed[:3])
        with_categories = recall(client, user_id=21, k=10, filter_viewed=False, allowed_item_ids=allowed,
                                 categories=["no-such-category"])
    assert [item["item_id"] for item in answer["items"]] == [item for item in everything if item in allowed][:10]
    assert sorted(item["item_id"] for item in few["items"]) == sorted(allowed[:3])
    assert with_categories["items"] == []  # both filters hold


def test_context_used_says_which_context_the_model_read(live_service, small_world):
    events = user_events(small_world, user_id=11)
    known = events[0]["context"]
    with live_service.client() as client:
        post_events(client, events)
        wait_for_vectors(client, 11)
        named = recall(client, user_id=11, context=known, k=5)
        unknown = recall(client, user_id=11, context="no-such-context", k=5)
        last = recall(client, user_id=11, k=5)
        cold = recall(client, user_id="never-seen", context="no-such-context", k=5)
    assert named["context_used"] == known
    assert unknown["context_used"] is None  # read as the default, and the answer says so
    assert last["context_used"] == events[-1]["context"]
    assert cold["context_used"] is None


def test_recent_events_personalise_a_cold_user_and_store_nothing(live_service, small_world):
    events = user_events(small_world, user_id=7)
    recent = [{key: value for key, value in event.items() if key not in ("user_id", "event_id")} for event in events]
    context = events[-1]["context"]
    services = live_service.app.state.services
    with live_service.client() as client:
        cold = recall(client, user_id="visitor-1", context=context, k=10, filter_viewed=False)
        personal = recall(client, user_id="visitor-1", context=context, k=10, filter_viewed=False,
                          recent_events=recent)
        filtered = recall(client, user_id="visitor-1", context=context, k=10, recent_events=recent)
        post_events(client, events)
        wait_for_vectors(client, 7)
        stored = recall(client, user_id=7, context=context, k=10, filter_viewed=False)
        # Events the stored history already holds are skipped: the precomputed vector still applies.
        resent = recall(client, user_id=7, k=10, recent_events=recent[-3:])
    assert cold["vector_source"] == "cold" and personal["vector_source"] == "online"
    assert personal["fallback"] is None
    ids = [item["item_id"] for item in personal["items"]]
    assert ids != [item["item_id"] for item in cold["items"]]
    assert len(set(ids) & {item["item_id"] for item in stored["items"]}) >= 9  # as if the webhook had sent them
    acted = {event["item_id"] for event in events if event["action"] != "show"}
    assert not {item["item_id"] for item in filtered["items"]} & acted
    assert resent["vector_source"] == "precomputed"
    assert not services.client.exists(services.keys.user("visitor-1"))  # nothing was written
