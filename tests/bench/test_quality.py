import pytest

from bench import quality
from bench.quality import (
    DEFAULT,
    DEFAULT_256,
    DEFAULT_REFIT,
    SASREC,
    cached,
    code_keys,
    markdown,
    mean_over_seeds,
    ndcg_cell,
    repeats_the_default,
    run_config,
)
from training.config import LossConfig, RunConfig


def test_rows_of_several_seeds_become_their_mean_with_a_standard_error():
    rows = [{"model": "TBGRecall", "ndcg@10": ndcg, "recall@10": recall, "epochs": epochs}
            for ndcg, recall, epochs in ((0.070, 0.14, 40), (0.074, 0.16, 50), (0.078, 0.15, 60))]
    merged = mean_over_seeds(rows)
    assert merged["model"] == "TBGRecall" and merged["seeds"] == 3
    assert merged["ndcg@10"] == pytest.approx(0.074) and merged["recall@10"] == pytest.approx(0.15)
    assert merged["epochs"] == pytest.approx(50)
    assert merged["ndcg@10_se"] == pytest.approx(0.004 / 3**0.5)  # sample sd 0.004 over sqrt(3)
    assert ndcg_cell(merged) == "0.0740 ± 0.0023"


def test_a_single_seed_shows_no_error_bar():
    merged = mean_over_seeds([{"model": "SASRec", "ndcg@10": 0.08}])
    assert merged["ndcg@10_se"] == 0.0 and ndcg_cell(merged) == "0.0800"


def test_the_markdown_table_marks_runs_not_made_yet_and_keeps_its_columns():
    finished = {"model": "popular", "recall@10": 0.05, "recall@50": 0.18, "recall@100": 0.26, "ndcg@10": 0.04}
    not_run = {"model": "TBGRecall", "missing": "not run yet"}
    needs_gpu = {"model": "TBGRecall (softmax)", "missing": "needs a GPU for 106,867 items"}
    text = markdown({"trivago": [finished, not_run, needs_gpu]}, "python bench/quality.py")
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert "| popular | 0.0500 | 0.1800 | 0.2600 | 0.0400 |" in text
    assert "| TBGRecall | not run yet |" in text
    assert "| TBGRecall (softmax) | needs a GPU for 106,867 items |" in text
    assert len({line.count("|") for line in table}) == 1  # header, rule and every row have the same columns


def test_a_finished_run_is_reused_and_a_missing_one_is_trained_only_when_asked(tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "FINISHED_RUNS", tmp_path)
    rows = [{"model": "SASRec", "ndcg@10": 0.08}]
    keys = [{"epochs": 3}]
    assert cached("synthetic", "SASRec", keys, lambda: pytest.fail("trained"), train_missing=False) == []
    assert cached("synthetic", "SASRec", keys, lambda: rows) == rows  # trained once and kept
    assert cached("synthetic", "SASRec", keys, lambda: pytest.fail("trained twice")) == rows


def test_a_setting_added_later_does_not_invalidate_the_runs_cached_before_it(tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "FINISHED_RUNS", tmp_path)
    rows = [{"model": "SASRec", "ndcg@10": 0.08}]
    config = run_config(SASREC, epochs=30)
    current, *earlier = code_keys(config)
    assert "shard_events" in current["train"] and "shard_events" not in earlier[-1]["train"]
    cached("synthetic", "SASRec", [earlier[-1]], lambda: rows)  # made by the code before those settings
    assert cached("synthetic", "SASRec", code_keys(config), lambda: pytest.fail("retrained")) == rows
    # ... but a run that sets one of them away from its old behaviour is a different run
    config.train.time_budget_s = 600.0
    assert cached("synthetic", "SASRec", code_keys(config), lambda: [], train_missing=False) == []


def test_a_setting_removed_later_still_finds_the_runs_it_could_not_have_changed(tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "FINISHED_RUNS", tmp_path)
    rows = [{"model": "SASRec", "ndcg@10": 0.08}]
    config = run_config(SASREC, epochs=30)
    current, with_retired, *_ = code_keys(config)
    assert "content_weight" not in current["loss"] and with_retired["loss"]["content_weight"] == 1.0
    cached("synthetic", "SASRec", [with_retired], lambda: rows)  # made while the setting existed
    assert cached("synthetic", "SASRec", code_keys(config), lambda: pytest.fail("retrained")) == rows
    config.model.item_attributes = True  # a content model: the removed setting did change it
    assert all("content_weight" not in key["loss"] for key in code_keys(config))


def test_a_run_the_validation_holdout_change_could_alter_is_retrained_and_no_other(tmp_path, monkeypatch):
    monkeypatch.setattr(quality, "FINISHED_RUNS", tmp_path)
    rows = [{"model": "SASRec", "ndcg@10": 0.08}]
    config = run_config(SASREC, epochs=30)
    cached("movielens-100k", "SASRec", code_keys(config), lambda: rows)
    # 943 users under loo, all validated: the same run as before, found again
    assert cached("movielens-100k", "SASRec", code_keys(config, loo_users=943),
                  lambda: pytest.fail("retrained")) == rows
    # more users than validated: the unvalidated users now keep their last target, a different run
    assert cached("movielens-100k", "SASRec", code_keys(config, loo_users=12_000), lambda: [],
                  train_missing=False) == []


def test_a_variant_of_the_default_that_the_logs_pick_already_holds_is_not_trained_twice():
    picked = RunConfig(loss=LossConfig(retrieval="sampled_softmax", n_negatives=1024))
    assert not repeats_the_default(DEFAULT, picked)  # the default row itself
    assert not repeats_the_default(DEFAULT_REFIT, picked) and not repeats_the_default(DEFAULT_256, picked)
    picked.train.refit, picked.loss.n_negatives = True, 256  # a short-visit log's pick, with 256 negatives
    assert repeats_the_default(DEFAULT_REFIT, picked) and repeats_the_default(DEFAULT_256, picked)
    assert not repeats_the_default(SASREC, picked)  # a tuned row, not a variant of the pick
