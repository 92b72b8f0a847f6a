"""`recall train`, `recall recommend` and `recall evaluate --run` as a user runs them."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cli.main import main


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, small_world):
    directory, _ = small_world
    run = tmp_path_factory.mktemp("runs") / "tbg"
    config = tmp_path_factory.mktemp("config") / "train.toml"
    config.write_text("[model]\ndim = 32\nmax_len = 96\n[train]\nbatch_size = 32\nlr = 0.003\nthreads = 2\n")
    code = main(["train", "--events", str(directory / "events.parquet"), "--items", str(directory / "items.parquet"),
                 "--out", str(run), "--config", str(config), "--epochs", "1", "--deterministic"])
    assert code == 0
    return run


def test_train_writes_a_complete_run(trained_run):
    assert {p.name for p in trained_run.iterdir()} == {"config.json", "model.pt", "vocabularies.json",
                                                      "metrics.json", "history.json", "sample_inputs.npz"}
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert metrics["protocol"] == "temporal" and "ndcg@10" in metrics["validation"]
    config = json.loads((trained_run / "config.json").read_text())
    assert config["model"]["dim"] == 32 and config["train"]["deterministic"] is True


def test_recommend_writes_documented_columns_with_original_ids(trained_run, small_world, tmp_path):
    directory, _ = small_world
    users = tmp_path / "users.csv"
    users.write_text("user_id\n3\n17\nnobody-yet\n")
    out = tmp_path / "recs.csv"
    code = main(["recommend", "--run", str(trained_run), "--events", str(directory / "events.parquet"),
                 "--users", str(users), "--k", "7", "--context", "home", "--out", str(out)])
    assert code == 0
    recs = pd.read_csv(out, dtype={"user_id": str})
    assert list(recs.columns) == ["user_id", "item_id", "rank", "score"]
    assert set(recs.user_id) == {"3", "17", "nobody-yet"}  # the unknown user gets a cold-start list
    assert (recs.groupby("user_id").size() == 7).all()
    assert (recs.groupby("user_id")["rank"].apply(list) == pd.Series([[1, 2, 3, 4, 5, 6, 7]] * 3,
                                                                      index=["17", "3", "nobody-yet"])).all()
    catalogue = set(pd.read_parquet(directory / "items.parquet").item_id)
    assert set(recs.item_id) <= catalogue
    assert recs.groupby("user_id").score.apply(lambda s: s.is_monotonic_decreasing).all()
    events = pd.read_parquet(directory / "events.parquet")
    clicked_by_3 = set(events[(events.user_id == 3) & (events.action != "show")].item_id)
    assert not clicked_by_3 & set(recs[recs.user_id == "3"].item_id)  # viewed items filtered, as /v1/recall does


def test_context_changes_the_candidates(trained_run, small_world, tmp_path):
    directory, world = small_world
    outputs = []
    for context in ("home", f"search:{world.category_words[0]}"):
        out = tmp_path / f"{len(outputs)}.csv"
        main(["recommend", "--run", str(trained_run), "--events", str(directory / "events.parquet"), "--k", "20",
              "--context", context, "--out", str(out)])
        outputs.append(pd.read_csv(out))
    assert not outputs[0].item_id.equals(outputs[1].item_id)


def test_evaluate_a_run_beside_the_baselines(trained_run, small_world, capsys):
    directory, _ = small_world
    assert main(["evaluate", "--run", str(trained_run), "--events", str(directory / "events.parquet"),
                 "--items", str(directory / "items.parquet"), "--k", "10", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["models"]) == {"popular", "context-popular", f"tbgrecall ({trained_run.name})"}


@pytest.mark.parametrize(("toml", "named"), [("[model]\nwidth = 3\n", "unknown ModelConfig option(s): width"),
                                             ('[model]\ndim = "abc"\n', "model.dim: input should be a valid integer")])
def test_bad_config_is_a_clear_error(small_world, tmp_path, capsys, toml, named):
    directory, _ = small_world
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    code = main(["train", "--events", str(directory / "events.parquet"), "--out", str(tmp_path / "r"),
                 "--config", str(config)])
    error = capsys.readouterr().err.strip()
    assert code == 2 and named in error and "\n" not in error and "Traceback" not in error
    assert not (tmp_path / "r").exists()


def test_warm_start_from_another_encoder_is_a_clear_error(trained_run, small_world, tmp_path, capsys):
    directory, _ = small_world
    code = main(["train", "--events", str(directory / "events.parquet"), "--out", str(tmp_path / "r"),
                 "--init-from", str(trained_run), "--encoder", "sasrec"])
    assert code == 2 and "sasrec cannot warm-start from" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def plain_interactions(write_csv):
    """user, item and order only (the leave-one-out benchmarks' shape): 40 users walking a ring of 25 items."""
    return write_csv([{"user_id": u, "item_id": f"i{(3 * u + n) % 25}"} for u in range(40) for n in range(8)])


def test_train_without_flags_picks_settings_for_the_log_prints_and_records_them(write_csv, tmp_path, capsys):
    events = plain_interactions(write_csv)
    code = main(["train", "--events", str(events), "--out", str(tmp_path / "run"), "--epochs", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "settings chosen for this log" in printed and "model.layout" in printed and "items" in printed
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model"]["layout"] == "items" and config["loss"]["retrieval"] == "softmax"
    recorded = {c["setting"]: c for c in json.loads((tmp_path / "run" / "metrics.json").read_text())[
        "settings_chosen"]}
    assert recorded["model.layout"]["value"] == "items" and recorded["model.layout"]["why"]
    assert "train.epochs" not in recorded  # --epochs overrode that choice
    # 40 validated users' last clicks are an eighth of the log: the run retrains on everything, and says so
    assert recorded["train.refit"]["value"] is True and "refit on everything for" in printed


def test_a_config_file_and_flags_override_the_chosen_settings(write_csv, tmp_path):
    config = tmp_path / "train.toml"
    config.write_text('[model]\nlayout = "sessions"\n[loss]\ntemperature = 0.2\n')
    code = main(["train", "--events", str(plain_interactions(write_csv)), "--out", str(tmp_path / "run"),
                 "--config", str(config), "--loss", "sampled_softmax", "--epochs", "1"])
    assert code == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["model"]["layout"], saved["loss"]["retrieval"], saved["loss"]["temperature"]) == (
        "sessions", "sampled_softmax", 0.2)
    recorded = {c["setting"] for c in json.loads((tmp_path / "run" / "metrics.json").read_text())["settings_chosen"]}
    assert not recorded & {"model.layout", "loss.retrieval", "loss.temperature"}


def test_a_baseline_encoder_is_not_told_tbgrecall_s_layout(write_csv, tmp_path, capsys):
    code = main(["train", "--events", str(plain_interactions(write_csv)), "--out", str(tmp_path / "run"),
                 "--encoder", "sasrec", "--epochs", "1"])
    assert code == 0 and "model.layout" not in capsys.readouterr().out
    recorded = {c["setting"] for c in json.loads((tmp_path / "run" / "metrics.json").read_text())["settings_chosen"]}
    assert "loss.retrieval" in recorded and not any(setting.startswith("model.") for setting in recorded)


@pytest.mark.integration
def test_a_parquet_log_past_shard_events_is_streamed_and_its_run_recommends(tiny_world, tmp_path, capsys):
    events = pd.read_parquet(tiny_world / "events.parquet")
    (tmp_path / "log").mkdir()
    events.iloc[: len(events) // 2].to_parquet(tmp_path / "log" / "a.parquet")
    events.iloc[len(events) // 2:].to_parquet(tmp_path / "log" / "b.parquet")
    run = tmp_path / "run"
    code = main(["train", "--events", str(tmp_path / "log"), "--items", str(tiny_world / "items.parquet"),
                 "--out", str(run), "--epochs", "1", "--shard-events", str(len(events) // 3 + 1), "--threads", "2"])
    assert code == 0
    assert "streamed in 3 user shards" in capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"]["user_shards"] == 3 and metrics["events"] == len(events)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["log", "run"]  # the shards are gone
    out = tmp_path / "recs.csv"
    assert main(["recommend", "--run", str(run), "--events", str(tmp_path / "log"), "--k", "5", "--out",
                 str(out)]) == 0
    recommendations = pd.read_csv(out)
    assert recommendations["user_id"].nunique() == events["user_id"].nunique()


def test_shard_events_must_be_a_positive_integer(write_csv, tmp_path, capsys):
    events = write_csv([{"user_id": "u", "item_id": "i"}])
    config = tmp_path / "train.toml"
    config.write_text('[train]\nshard_events = "many"\n')
    assert main(["train", "--events", str(events), "--out", str(tmp_path / "run"), "--config", str(config)]) == 2
    assert "train.shard_events must be a positive integer, got 'many'" in capsys.readouterr().err
