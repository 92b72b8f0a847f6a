"""Popularity and context-popularity baselines."""

from __future__ import annotations

import numpy as np

from contract.events import load_events
from evaluation.popularity import ContextPopularModel, PopularModel
from evaluation.splits import EvalCases


def one_case(user: int, context: int) -> EvalCases:
    return EvalCases(np.array([user], np.int32), np.array([context], np.int32), np.zeros(1, np.int32),
                     np.zeros(1, np.int64), np.array([0, 1]), np.array([1], np.int32))


def test_popular_ranks_by_target_actions_and_filters_viewed(write_csv):
    log = load_events(write_csv([
        {"user_id": 1, "item_id": "a", "action": "click", "context": "home"},
        {"user_id": 2, "item_id": "a", "action": "click", "context": "home"},
        {"user_id": 3, "item_id": "a", "action": "click", "context": "home"},
        {"user_id": 1, "item_id": "b", "action": "click", "context": "q:hats"},
        {"user_id": 2, "item_id": "b", "action": "cart", "context": "q:hats"},
        {"user_id": 3, "item_id": "c", "action": "click", "context": "q:hats"},
        {"user_id": 3, "item_id": "d", "action": "show", "context": "home"},  # shows do not count
        {"user_id": 4, "item_id": "d", "action": "show", "context": "home"},
    ]))
    items = log.vocabs.items
    model = PopularModel().fit(log)
    _, ranked = model.recommend(one_case(1, 0), k=3)
    assert list(items.decode(ranked[0])) == ["a", "b", "c"]
    viewed = (np.array([0, 1]), np.array([items.code_of("a")], np.int32))
    _, ranked = model.recommend(one_case(1, 0), k=2, viewed=viewed)
    assert list(items.decode(ranked[0])) == ["b", "c"]

    by_context = ContextPopularModel().fit(log)
    _, ranked = by_context.recommend(one_case(1, log.vocabs.contexts.code_of("q:hats")), k=3)
    assert list(items.decode(ranked[0])) == ["b", "c", "a"]  # the context's items first, then global
    _, ranked = by_context.recommend(one_case(1, 0), k=3)  # a context never seen: global popularity
    assert list(items.decode(ranked[0])) == ["a", "b", "c"]
