"""Training end to end on small synthetic worlds: it learns, it is reproducible, it warm-starts."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from contract.events import load_events
from contract.user_shards import write_user_shards
from evaluation.evaluate import evaluate
from evaluation.popularity import PopularModel
from evaluation.splits import leave_one_out, temporal_split
from evaluation.synth import SynthConfig, generate
from tests.support.runs import catalogue_with_new_items
from training.config import LossConfig, ModelConfig, RunConfig, TrainConfig, readable_log
from training.model import RecallModel
from training.recommender import EncoderRecommender
from training.trainer import train, training_source, validation_split


def small_config(**train_options) -> RunConfig:
    return RunConfig(model=ModelConfig(dim=32, n_heads=2, n_layers=2, max_len=128),
                     train=TrainConfig(batch_size=16, lr=3e-3, threads=2, **train_options))


@pytest.mark.e2e  # a learning-quality check: six epochs on the small world
def test_a_short_training_run_beats_popularity(small_world):
    directory, _ = small_world
    log = load_events(directory / "events.parquet", directory / "items.parquet")
    split = temporal_split(log)
    result = train(split.train, small_config(epochs=6, patience=6), protocol="temporal", show_progress=False)
    popular, model = evaluate(split, [PopularModel().fit(split.train), EncoderRecommender(result.model, split.train)],
                              [50])
    assert model.overall["recall@50"] > 1.2 * popular.overall["recall@50"]
    assert [row["epoch"] for row in result.history] == list(range(1, len(result.history) + 1))


@pytest.mark.e2e  # the same learning-quality check, on a log streamed from disk in shards of users
def test_a_log_streamed_in_user_shards_learns(small_world, tmp_path):
    directory, _ = small_world
    log = load_events(directory / "events.parquet", directory / "items.parquet")
    split = temporal_split(log)
    events = pd.read_parquet(directory / "events.parquet")
    events[events["timestamp"] < split.train.timestamp.max()].to_parquet(tmp_path / "train.parquet")
    shards = write_user_shards(tmp_path / "train.parquet", directory / "items.parquet", tmp_path / "shards",
                               shard_events=len(split.train) // 3, session_gap_s=1800, show_progress=False)
    assert shards.n_shards >= 3
    result = train(shards, small_config(epochs=6, patience=6), protocol="temporal", show_progress=False)
    # The model is scored on the whole log's codes: the shards share its item vocabulary, in the same order.
    assert shards.vocabs.items.ids == log.vocabs.items.ids[:len(shards.vocabs.items.ids)]
    popular, model = evaluate(split, [PopularModel().fit(split.train), EncoderRecommender(result.model, split.train)],
                              [50])
    assert model.overall["recall@50"] > 1.2 * popular.overall["recall@50"]


def test_a_sharded_log_under_leave_one_out_holds_out_only_the_validated_users(write_csv, tmp_path):
    clicks = [{"user_id": f"u{user}", "item_id": f"i{(user + step) % 7}", "timestamp": step * 3600}
              for user in range(60) for step in range(4)]
    events = write_csv(pd.DataFrame(clicks), "events.parquet")
    shards = write_user_shards(events, None, tmp_path / "shards", shard_events=80, session_gap_s=1800,
                               show_progress=False)
    assert shards.n_shards >= 3
    config = small_config(valid_max_cases=5)
    valid, source = training_source(shards, config, "loo", torch.device("cpu"), rank=0, world=1)
    assert len(valid.cases) == 5
    # An hour between clicks: each is its own session. Shard 0 loses the five validated users' last click; every
    # other shard trains on all its events.
    assert len(source.train_part(0)) == len(readable_log(shards.load(0), config.model)) - 5
    for shard in range(1, shards.n_shards):
        assert len(source.train_part(shard)) == len(readable_log(shards.load(shard), config.model))


def test_temporal_validation_includes_users_first_seen_in_the_holdout(write_csv):
    day = 86_400
    log = load_events(write_csv(
        [{"user_id": "regular", "timestamp": d * day, "item_id": f"i{d}", "action": "click"} for d in range(1, 10)]
        + [{"user_id": "newcomer", "timestamp": 10 * day, "item_id": "i1", "action": "click",
            "context": "paris"}]))
    # On session data where most users visit once, the newcomers are most of what early stopping can watch.
    valid = validation_split(log, "temporal", max_cases=100, seed=0)
    assert list(log.vocabs.users.decode(valid.cases.user)) == ["newcomer"]


def test_deterministic_runs_give_the_same_loss(tmp_path):
    events, items, _ = generate(SynthConfig(n_users=120, n_items=100, seed=5))
    events.to_parquet(tmp_path / "e.parquet")
    items.to_parquet(tmp_path / "i.parquet")
    losses = []
    for _ in range(2):
        log = load_events(tmp_path / "e.parquet", tmp_path / "i.parquet")
        result = train(log, small_config(epochs=2, deterministic=True), protocol="temporal", show_progress=False)
        losses.append([row["loss"] for row in result.history])
    assert losses[0] == losses[1]


def test_warm_start_keeps_old_rows_and_adds_new_ones(tmp_path):
    events, _, _ = generate(SynthConfig(n_users=100, n_items=80, seed=1))
    day1 = events[events.item_id < 60]
    day1.to_parquet(tmp_path / "day1.parquet")
    log1 = load_events(tmp_path / "day1.parquet")
    first = train(log1, small_config(epochs=1), protocol="temporal", show_progress=False)
    old_rows = first.model.item_tower.item_embedding.weight.detach().clone()
    # Day 2 brings items 60..79 and a new context; the old items keep their codes and their rows.
    day2 = pd.concat([events[events.item_id >= 40], events.head(1).assign(context="brand new")])
    day2.to_parquet(tmp_path / "day2.parquet")
    log2 = load_events(tmp_path / "day2.parquet", vocabs=log1.vocabs)
    assert log2.vocabs.items.ids[: len(old_rows)] == log1.vocabs.items.ids[: len(old_rows)]
    assert log2.n_items > len(old_rows)
    warm = train(log2, small_config(epochs=0), protocol="temporal", init_state=first.model.state_dict(),
                 show_progress=False)
    new_rows = warm.model.item_tower.item_embedding.weight.detach()
    assert new_rows.shape[0] == log2.n_items
    assert torch.equal(new_rows[: len(old_rows)], old_rows)
    assert warm.model.encoder.context_embedding.num_embeddings == len(log2.vocabs.contexts)
    assert not np.allclose(new_rows[len(old_rows):].numpy(), 0)  # new items start from a fresh initialisation


def test_refit_also_learns_from_the_validation_holdout(tmp_path):
    """Early stopping holds out each user's last event; with `refit` the final model is trained again on
    everything, so an item seen only in that holdout is learned (in-batch negatives: no other path updates it)."""
    users, steps = np.divmod(np.arange(40 * 8), 8)
    events = pd.DataFrame({"user_id": users, "item_id": (users * 3 + steps) % 30 + 1,
                           "timestamp": 1_700_000_000 + 86_400 * steps})
    events.loc[7, "item_id"] = 999  # user 0's last click: only ever in the holdout
    events.to_parquet(tmp_path / "e.parquet")
    log = load_events(tmp_path / "e.parquet")
    code = int(log.vocabs.items.lookup(np.array(["999"], dtype=object))[0])
    changed = {}
    for refit in (False, True):
        config = small_config(epochs=2, refit=refit, weight_decay=0.0)
        config.loss.retrieval, config.loss.negatives, config.loss.n_negatives = "bce", "in-batch", 8
        torch.manual_seed(config.train.seed)  # the initial weights, as training draws them
        initial = RecallModel(config.model, log.vocabs.sizes() | {"items": log.n_items})
        result = train(log, config, protocol="loo", show_progress=False)
        changed[refit] = not torch.equal(result.model.item_tower.item_embedding.weight[code].detach(),
                                         initial.item_tower.item_embedding.weight[code])
    assert code > 0 and changed == {False: False, True: True}


def test_a_refit_that_would_end_past_the_time_budget_is_skipped(write_csv):
    log = load_events(write_csv([{"user_id": u, "item_id": f"i{(3 * u + n) % 25}"}
                                 for u in range(40) for n in range(8)]))
    # One epoch already spends the whole (tiny) budget: the run keeps its best model instead of retraining.
    over = train(log, small_config(epochs=1, refit=True, time_budget_s=0.01), protocol="loo", show_progress=False)
    assert over.metrics["refit_epochs"] == 0
    within = train(log, small_config(epochs=1, refit=True, time_budget_s=3600.0), protocol="loo", show_progress=False)
    assert within.metrics["refit_epochs"] == 1


def test_the_items_layout_learns_the_order_of_a_plain_click_sequence(write_csv):
    # Users walk a ring of 30 items, one step per click, with timestamps a minute apart: a 30-minute gap would make
    # each walk one session, whose order the items layout must still read. The next item is always the next one.
    rows = [{"user_id": u, "item_id": f"i{(u + n) % 30}", "timestamp": 1_700_000_000 + 60 * n}
            for u in range(90) for n in range(10)]
    log = load_events(write_csv(rows))
    split = leave_one_out(log.event_sessions())
    config = RunConfig(model=ModelConfig(dim=32, n_heads=2, max_len=32, layout="items"),
                       loss=LossConfig(retrieval="softmax", temperature=0.1),
                       train=TrainConfig(epochs=15, batch_size=16, lr=3e-3, threads=2, patience=15))
    result = train(split.train, config, protocol="loo", show_progress=False)
    popular, model = evaluate(split, [PopularModel().fit(split.train), EncoderRecommender(result.model, split.train)],
                              [1])
    assert model.overall["recall@1"] > 0.8 > 0.2 > popular.overall["recall@1"]


def test_a_log_with_nothing_to_validate_on_is_one_clear_error(write_csv):
    from contract.errors import DataError

    log = load_events(write_csv([{"user_id": user, "item_id": "a", "action": "click"} for user in range(5)]))
    with pytest.raises(DataError, match="nothing to validate on"):
        validation_split(log, "loo", max_cases=100, seed=0)


def test_a_warm_start_keeps_its_semantic_codebook_as_the_catalogue_grows(tmp_path):
    # Day 2's catalogue is big enough for twice the codes a level; refitting them would make code c mean another
    # group of items than the one its trained embedding learned (and refuse the warm start).
    events, items, _ = generate(SynthConfig(n_users=150, n_items=600, seed=2))
    items.to_parquet(tmp_path / "items.parquet")
    items[items.item_id < 100].to_parquet(tmp_path / "items1.parquet")
    config = small_config(epochs=0)
    config.model.item_text, config.model.semantic_id_levels = True, 2
    events[events.item_id < 100].to_parquet(tmp_path / "day1.parquet")
    log1 = load_events(tmp_path / "day1.parquet", tmp_path / "items1.parquet")
    first = train(log1, config, protocol="temporal", show_progress=False)
    events.to_parquet(tmp_path / "day2.parquet")
    log2 = load_events(tmp_path / "day2.parquet", tmp_path / "items.parquet", vocabs=log1.vocabs)
    warm = train(log2, config, protocol="temporal", init_state=first.model.state_dict(), show_progress=False)
    before, after = first.model.item_tower, warm.model.item_tower
    assert torch.equal(after.semantic_centroids, before.semantic_centroids)
    assert torch.equal(after.item_semantic[: before.n_items], before.item_semantic)
    assert warm.model.content_stats["semantic_ids"]["items"] > first.model.content_stats["semantic_ids"]["items"]


def test_item_content_leaves_the_models_own_training_as_it_was(tmp_path):
    # Content places only the items no one acted on, through a head fitted after training: the model itself, the
    # vectors of the items it knows and its validation are step for step those of the same model without content.
    log = catalogue_with_new_items(tmp_path)
    results = []
    for content in (False, True):
        config = small_config(epochs=2, grad_clip=0.05)  # clipped in every step
        config.model.item_attributes = config.model.item_text = content
        config.model.semantic_id_levels = 2 if content else 0
        results.append(train(log, config, protocol="loo", show_progress=False))
    bare, with_content = results
    assert all(epoch["loss"] > 0 for epoch in bare.history)  # it trained
    assert [epoch["ndcg@10"] for epoch in bare.history] == [epoch["ndcg@10"] for epoch in with_content.history]
    content_state = with_content.model.state_dict()
    assert all(torch.equal(value, content_state[name]) for name, value in bare.model.state_dict().items())
    assert with_content.model.content_stats["head"]["known_items"] == 30  # and the head learned from them
