"""POST /v1/items: a new item is retrievable by its content at once, by every request after, and after a
restart; a bad batch adds nothing. Real redis-server, onnxruntime (content tower and text encoder) and FAISS."""

from __future__ import annotations

import numpy as np
import orjson
import pandas as pd
import pytest

from service.ingest import signed_headers
from service.live_items import FreshItems
from tests.service.test_service import recall, user_events
from tests.support.runs import exported_run
from tests.support.service import SECRET, LiveService, service_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def content_index(tmp_path_factory, small_world):
    """A TBGRecall whose item tower reads titles (text and semantic ids), exported and published."""
    from index_builder.build import build_and_publish

    root = tmp_path_factory.mktemp("content_model")
    _, artifacts = exported_run(root, small_world, epochs=6, item_text=True, semantic_id_levels=2)
    build_and_publish(artifacts, root / "index")
    return root / "index"


def post_items(client, items: list[dict], secret: str = SECRET):
    body = orjson.dumps({"items": items})
    return client.post("/v1/items", content=body, headers=signed_headers(secret, body))


def shopper(small_world) -> tuple[list[dict], pd.DataFrame, pd.Series]:
    """(a user's recent events, the items file, an item of a category they never touched)."""
    directory, _ = small_world
    items = pd.read_parquet(directory / "items.parquet").set_index("item_id")
    events = user_events(small_world, user_id=7)
    touched = set(items.loc[[event["item_id"] for event in events], "category"])
    recent = [{key: value for key, value in event.items() if key not in ("user_id", "event_id")}
              for event in events][-200:]
    return recent, items, items[~items.category.isin(touched)].iloc[0]


def test_a_new_item_is_retrieved_by_its_content_at_once_and_after_a_restart(tmp_path, content_index, small_world):
    recent, items, stranger = shopper(small_world)
    settings = service_settings(tmp_path, index_root=content_index)
    service = LiveService(settings).start()
    try:
        with service.client() as client:
            before = recall(client, user_id="visitor", recent_events=recent, k=50)
            # a new item whose content matches the user's history: the twin of the item that suits them best
            best = items.loc[recall(client, user_id="visitor", recent_events=recent, k=1,
                                    filter_viewed=False)["items"][0]["item_id"]]
            twin = {"item_id": "new-twin", "category": best.category, "seller": best.seller, "title": best.title}
            unrelated = {"item_id": "new-stranger", "category": stranger.category, "title": stranger.title}
            response = post_items(client, [twin, unrelated])
            assert response.status_code == 200, response.text
            assert response.json() == {"added": 2, "known": 0}
            after = recall(client, user_id="visitor", recent_events=recent, k=50)
            assert post_items(client, [twin]).json() == {"added": 0, "known": 1}  # the catalogue has it now
            only_twins_category = recall(client, user_id="visitor", recent_events=recent, k=50,
                                         categories=[str(stranger.category)])
    finally:
        service.stop()
    ids = [item["item_id"] for item in after["items"]]
    assert "new-twin" in ids and "new-twin" not in [item["item_id"] for item in before["items"]]
    assert "new-stranger" not in ids  # content the user never showed interest in stays out
    scores = [item["score"] for item in after["items"]]
    assert scores == sorted(scores, reverse=True)  # the fresh items are merged in score order
    assert "new-twin" not in [item["item_id"] for item in only_twins_category["items"]]  # filters apply
    assert "new-stranger" in [item["item_id"] for item in only_twins_category["items"]]

    restarted = LiveService(settings).start()  # the same Redis data and index: a restart
    try:
        with restarted.client() as client:
            again = recall(client, user_id="visitor", recent_events=recent, k=50)
    finally:
        restarted.stop()
    assert [item["item_id"] for item in again["items"]] == ids
    assert np.allclose([item["score"] for item in again["items"]], scores, atol=1e-5)


def test_a_bad_batch_adds_nothing_and_says_which_field(tmp_path, content_index):
    service = LiveService(service_settings(tmp_path, index_root=content_index)).start()
    try:
        with service.client() as client:
            bad = post_items(client, [{"item_id": "fine", "title": "a chair"}, {"item_id": "broken", "title": 5}])
            repeated = post_items(client, [{"item_id": "x"}, {"item_id": "x"}])
            unsigned = client.post("/v1/items", json={"items": [{"item_id": "y"}]})
            nan = client.post("/v1/items", content=b'{"items": [{"item_id": NaN}]}',
                              headers=signed_headers(SECRET, b'{"items": [{"item_id": NaN}]}'))
            answer = recall(client, user_id="visitor", k=1000, filter_viewed=False)
    finally:
        service.stop()
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["items", 1, "title"]
    assert repeated.status_code == 422 and "more than once" in repeated.text
    assert unsigned.status_code == 401 and nan.status_code == 422
    assert "fine" not in [item["item_id"] for item in answer["items"]]  # all or nothing


def test_fresh_items_apply_exclusions_categories_and_allow_lists():
    vectors = np.eye(3, dtype=np.float32)
    fresh = FreshItems().added(["a", 2, "c"], np.array([1, 1, 2]), vectors)
    query = np.array([0.9, 0.5, 0.1], dtype=np.float32)
    assert fresh.top_k(query, 3, set(), None, None)[0] == ["a", 2, "c"]
    assert fresh.top_k(query, 3, {"a"}, None, None)[0] == [2, "c"]
    assert fresh.top_k(query, 3, set(), np.array([2]), None)[0] == ["c"]
    assert fresh.top_k(query, 3, set(), None, {"2", "c"})[0] == [2, "c"]
    assert fresh.has(2) and fresh.has("2") and not fresh.has("b")


def test_a_model_that_knows_items_only_by_id_refuses_new_items_with_a_reason(live_service):
    with live_service.client() as client:
        response = post_items(client, [{"item_id": "new", "title": "a chair"}])
    assert response.status_code == 409 and "only by their id" in response.json()["detail"][0]["msg"]


def test_the_side_index_answers_as_a_full_sort_would():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2000, 8)).astype(np.float32)
    vectors[7] = vectors[3]  # a tie: the earlier add first
    categories = rng.integers(1, 6, 2000)
    fresh = FreshItems().added([f"i{n}" for n in range(2000)], categories, vectors)
    query = vectors[3].copy()
    excluded = {f"i{n}" for n in rng.choice(2000, 300, replace=False)} - {"i3", "i7"} | {"unknown"}
    allowed = {f"i{n}" for n in range(0, 2000, 3)} | {"i7"}
    for wanted, allow in ((np.array([2, 4]), None), (None, allowed), (np.array([categories[3]]), allowed)):
        keep = np.array([f"i{n}" not in excluded and (wanted is None or categories[n] in wanted)
                         and (allow is None or f"i{n}" in allow) for n in range(2000)])
        rows = np.flatnonzero(keep)
        expected = rows[np.argsort(-(vectors[rows] @ query), kind="stable")][:50]
        ids, scores = fresh.top_k(query, 50, excluded, wanted, allow)
        assert ids == [f"i{n}" for n in expected]
        assert np.allclose(scores, vectors[expected] @ query)
    assert len(fresh.top_k(query, 50, set(), None, {"i1", "i2"})[0]) == 2  # fewer than k pass: no filler
