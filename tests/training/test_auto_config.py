"""The settings `recall train` picks from the shape of a log, on tiny hand-built logs of each shape."""

from __future__ import annotations

import torch

from contract.events import load_events
from training.auto_config import LogProfile, choose, matmul_flops, profile_log

FAST_MACHINE = 1e12  # multiply-adds x2 per second: the full softmax fits any tiny catalogue
SLOW_MACHINE = 1e3
BUDGET_S = 1800


def chosen(log, flops=FAST_MACHINE):
    config, choices = choose(profile_log(log), BUDGET_S, flops, "loo")
    return config, {choice.setting: choice.value for choice in choices}


def test_a_plain_interaction_list_gets_the_items_layout_and_the_full_softmax(write_csv):
    # user, item and order only, as in the Amazon leave-one-out benchmarks: every event is its own session
    log = load_events(write_csv([{"user_id": u, "item_id": f"i{(u + n) % 7}"} for u in range(5) for n in range(4)]))
    profile = profile_log(log)
    assert (profile.items_per_session, profile.has_context, profile.has_timestamp) == (1.0, False, False)
    config, settings = chosen(log)
    assert settings["model.layout"] == "items" and config.model.layout == "items"
    assert settings["loss.retrieval"] == "softmax" and settings["loss.temperature"] == 0.1
    assert settings["model.n_future_sessions"] == 1
    assert settings["train.warmup_steps"] == 1  # 5 users make one batch: warm-up never outlasts an epoch


def test_a_session_log_with_contexts_keeps_context_tokens(write_csv):
    rows = [{"user_id": u, "session_id": f"{u}-{s}", "timestamp": 1_700_000_000 + 600 * (2 * s + u),
             "item_id": f"i{(u + s + n) % 9}", "action": "show" if n else "click", "context": f"search:{s % 2}"}
            for u in range(4) for s in range(3) for n in range(3)]
    profile = profile_log(load_events(write_csv(rows)))
    assert profile.has_context and profile.has_shows and profile.items_per_session == 3.0
    assert chosen(load_events(write_csv(rows)))[1]["model.layout"] == "sessions"


def test_baskets_the_file_names_keep_context_tokens(write_csv):
    # a basket per session: the context token is where the query for the whole next basket is read
    rows = [{"user_id": u, "session_id": f"{u}-{s}", "item_id": f"i{(u * s + n) % 11}"}
            for u in range(4) for s in range(3) for n in range(4)]
    assert chosen(load_events(write_csv(rows)))[1]["model.layout"] == "sessions"


def test_clicks_cut_into_visits_by_time_gaps_are_read_in_order(write_csv):
    # YOOCHOOSE-like: timestamps, no session ids; a 30-minute gap makes visits of several clicks
    rows = [{"user_id": u, "item_id": f"i{(u + n) % 9}", "timestamp": 1_700_000_000 + 60 * n + 7200 * (n // 4)}
            for u in range(4) for n in range(8)]
    profile = profile_log(load_events(write_csv(rows)))
    assert profile.items_per_session == 4.0 and not profile.has_session_id
    assert chosen(load_events(write_csv(rows)))[1]["model.layout"] == "items"


def test_a_catalogue_too_large_for_the_full_softmax_in_the_budget_is_sampled(write_csv):
    log = load_events(write_csv([{"user_id": u, "item_id": f"i{u}-{n}"} for u in range(20) for n in range(5)]))
    config, settings = chosen(log, flops=SLOW_MACHINE)
    assert settings["loss.retrieval"] == "sampled_softmax" and config.loss.temperature == 0.05
    assert "would cost" in next(c.why for c in choose(profile_log(log), BUDGET_S, SLOW_MACHINE, "loo")[1]
                                if c.setting == "loss.retrieval")


def test_the_budget_bounds_the_run_and_every_choice_says_why(write_csv):
    log = load_events(write_csv([{"user_id": u, "item_id": f"i{n}"} for u in range(3) for n in range(3)]))
    config, choices = choose(profile_log(log), BUDGET_S, FAST_MACHINE, "loo")
    assert config.train.time_budget_s == BUDGET_S
    assert all(choice.why for choice in choices)
    config.validate()


def test_a_cpu_run_picks_the_same_settings_for_a_log_whatever_the_machine_is_doing():
    # Measured CPU speed moved +-15% with other processes and flipped these picks from run to run (BENCHMARKS.md):
    # on a CPU the shapes of the benchmark logs get fixed, documented settings.
    cpu_flops = matmul_flops(torch.device("cpu"))
    assert cpu_flops == matmul_flops(torch.device("cpu"))

    def loss_of(**shape) -> tuple[str, int]:
        session_log = dict(items_per_session=22.0, has_timestamp=True, has_context=True, has_shows=True,
                           has_session_id=True)
        config, _ = choose(LogProfile(**{**session_log, **shape}), BUDGET_S, cpu_flops, "temporal")
        return config.loss.retrieval, config.loss.n_negatives

    assert loss_of(events=240_000, users=2_000, items=1_500)[0] == "softmax"  # the synthetic world
    assert loss_of(events=293_000, users=6_000, items=107_000) == ("sampled_softmax", 1024)  # trivago
    assert loss_of(events=720_000, users=187_000, items=43_000, items_per_session=1.0, has_context=False,
                   has_shows=False, has_session_id=False) == ("sampled_softmax", 1024)  # Diginetica


def test_a_short_visit_log_under_leave_one_out_refits_on_its_validation_holdout():
    # YOOCHOOSE's shape: 10,000 validated visits' last clicks are 16% of the training clicks
    short_visits = LogProfile(events=62_636, users=21_000, items=2_933, items_per_session=1.0, has_timestamp=True,
                              has_context=False, has_shows=False, has_session_id=False)
    config, choices = choose(short_visits, BUDGET_S, FAST_MACHINE, "loo")
    assert config.train.refit and "16% of the events" in next(c.why for c in choices if c.setting == "train.refit")
    # Diginetica's: 10,000 of 720,000 clicks (1.4%), too little to pay for a second run
    long_log = LogProfile(**{**short_visits.__dict__, "events": 720_000, "users": 187_000})
    assert not choose(long_log, BUDGET_S, FAST_MACHINE, "loo")[0].train.refit
    # a temporal holdout is not refitted by default (not measured)
    assert not choose(short_visits, BUDGET_S, FAST_MACHINE, "temporal")[0].train.refit
