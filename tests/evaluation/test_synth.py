"""The synthetic world: shape, determinism, and a ground truth that rewards history and context."""

from __future__ import annotations

import pandas as pd

from contract.events import load_events
from evaluation.evaluate import evaluate
from evaluation.popularity import ContextPopularModel, PopularModel
from evaluation.splits import temporal_split
from evaluation.synth import OracleModel, SynthConfig, SyntheticWorld, generate


def test_same_seed_same_world_other_seed_other_world():
    first, items_first, _ = generate(SynthConfig(n_users=200, n_items=300, seed=7))
    again, items_again, _ = generate(SynthConfig(n_users=200, n_items=300, seed=7))
    other, _, _ = generate(SynthConfig(n_users=200, n_items=300, seed=8))
    pd.testing.assert_frame_equal(first, again)
    pd.testing.assert_frame_equal(items_first, items_again)
    assert not first["item_id"].equals(other["item_id"])


def test_sessions_show_10_to_30_distinct_items_with_rarer_follow_ups():
    events, _, _ = generate(SynthConfig(n_users=300, n_items=1000, seed=1))
    shows = events[events.action == "show"]
    shown_per_session = shows.groupby("session_id").item_id.nunique()
    assert shown_per_session.between(10, 30).all()
    assert (shows.groupby("session_id").size() == shown_per_session).all()  # no item shown twice
    counts = events.action.value_counts()
    assert counts["show"] > counts["click"] > counts["cart"] > counts["pay"] > 0
    clicked = set(zip(events[events.action == "click"].session_id, events[events.action == "click"].item_id,
                      strict=True))
    paid = zip(events[events.action == "pay"].session_id, events[events.action == "pay"].item_id, strict=True)
    assert all(pair in clicked for pair in paid)  # a pay always follows a click on the same item


def test_every_session_has_one_context_and_items_have_side_info():
    events, items, _ = generate(SynthConfig(n_users=300, n_items=500, seed=2))
    assert (events.groupby("session_id").context.nunique() == 1).all()
    assert set(events.scenario.unique()) == {"search", "home", "cart"}
    search = events[events.scenario == "search"]
    assert search.context.str.startswith("search:").all()
    assert items.category.nunique() > 5 and items.seller.nunique() > 5
    # A title is made of words of its category.
    assert all(row.category in row.title for row in items.itertuples())


def test_written_world_follows_the_contract_and_reloads(small_world):
    directory, world = small_world
    log = load_events(directory / "events.parquet", directory / "items.parquet")
    assert log.n_items - 1 == 800 and len(log.vocabs.scenarios) == 4
    reloaded = SyntheticWorld.load(directory / "world.npz")
    assert (reloaded.item_category == world.item_category).all()


def test_oracle_beats_popularity_by_a_wide_margin(small_world):
    directory, world = small_world
    log = load_events(directory / "events.parquet", directory / "items.parquet")
    split = temporal_split(log)
    models = [PopularModel().fit(split.train), ContextPopularModel().fit(split.train), OracleModel(world, log.vocabs)]
    popular, context_popular, oracle = (r.overall["recall@50"] for r in evaluate(split, models, [50]))
    assert oracle > 2.0 * popular
    assert oracle > context_popular + 0.1  # the history adds what the context alone cannot
    assert context_popular > 1.5 * popular  # the context matters
