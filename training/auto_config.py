"""The settings `recall train` picks from the shape of the log when nobody says otherwise.

A user's first run has no flags, on data we have never seen: a session log with contexts and impressions, or a
plain (user, item, order) list. Each choice below is a rule over a `LogProfile` and says why it was made; flags and
`--config` override any of them (cli/train_command.py layers them on top).

The rules rest on the measurements in BENCHMARKS.md ("Default training"):
- layout: on a plain sequence of acted items (no contexts, impressions or session ids), a context token per
  session carries only time features, doubles the sequence, and a time-gap session hides its clicks' order; the
  items layout reads one token per event, in order, and the query at the last one.
- loss: the full softmax beat 256 sampled negatives everywhere it could run (MovieLens-100K NDCG@10 0.085 against
  0.055 for TBGRecall). Its cost is pairs x catalogue per epoch, so it is chosen when that fits the time budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import torch

from contract.columns import SHOW
from contract.events import EventLog
from contract.user_shards import UserShards
from training.config import RunConfig

SOFTMAX_TEMPERATURE = 0.1  # full softmax: best of 0.05 / 0.1 / 0.2 on MovieLens-100K validation
SAMPLED_TEMPERATURE = 0.05
MIN_EPOCHS_IN_BUDGET = 20  # the full softmax must leave room for this many epochs, else it is sampled
SOFTMAX_BUDGET_SHARE = 0.5  # ... using at most this share of the budget on its logits (the encoder needs the rest)
MIN_NEGATIVES, MAX_NEGATIVES = 256, 4096  # sampled softmax: more negatives win (eSASRec, gSASRec) while they fit
VALID_MAX_CASES = 10_000
# Retrain on everything, the holdout included, for the best epoch count, where a loo holdout takes at least this
# share of the training events (short visits): on YOOCHOOSE (16%) that gave NDCG@10 +6.5%
REFIT_MIN_HOLDOUT_SHARE = 0.05
MAX_EPOCHS = 200  # an upper bound only: early stopping or the time budget end a run


@dataclass
class LogProfile:
    """What the log holds, as far as the choice of settings cares."""

    events: int
    users: int
    items: int  # catalogue size
    items_per_session: float  # mean distinct events per session
    has_timestamp: bool
    has_context: bool  # some session carries a non-default context
    has_shows: bool  # impressions are logged (shown, not acted on)
    has_session_id: bool  # sessions are given (requests, baskets), not cut from time gaps

    @property
    def plain_sequence(self) -> bool:
        """A sequence of acted items and nothing a context token could carry: no request context, no
        impressions, no session the file names (time-gap visits are ordered clicks, not one request)."""
        return not (self.has_context or self.has_shows or self.has_session_id)


def profile_log(log: EventLog | UserShards) -> LogProfile:
    """The profile of a log; of a sharded one, shard 0's (a random sample of users) with the whole log's counts."""
    if isinstance(log, UserShards):
        sample = profile_log(log.load(0))
        return replace(sample, events=log.events, users=round(sample.users * log.events / max(sample.events, 1)))
    return LogProfile(
        events=len(log), users=len(log.active_users), items=log.n_items - 1,
        items_per_session=len(log) / max(len(log.session_offsets) - 1, 1), has_timestamp=log.has_timestamp,
        has_context=bool((log.context != 0).any()), has_shows=bool((log.action == SHOW).any()),
        has_session_id=log.has_session_id,
    )


@dataclass
class Choice:
    setting: str  # "section.field"
    value: object
    why: str


# A CPU's speed is taken as this, not measured: measured, it moved 3x between two 2-core machines of one kind and
# +-15% with what else ran, and each move flipped a choice (the synthetic world's full softmax against 1,024
# negatives, Diginetica's 1,024 against 4,096), so the same log trained differently from run to run. The figure is
# a 2-core machine's float32 matmul speed (9-27 GFLOP/s measured on this project's); the budget still stops a run
# on a slower one, at its best epoch.
CPU_FLOPS = 1.2e10


def matmul_flops(device: torch.device, dim: int = 64) -> float:
    """Float32 multiply-adds x2 per second of a (pairs x d) @ (d x items) product: what the full softmax's logits
    cost. Measured on a GPU (they differ tenfold across generations and time steadily), the best of several
    timings; CPU_FLOPS on a CPU."""
    if device.type != "cuda":
        return CPU_FLOPS
    query = torch.randn(4096, dim, device=device)
    catalogue = torch.randn(dim, 8192, device=device)
    best = float("inf")
    for _ in range(6):  # the first is a warm-up
        started = time.perf_counter()
        query @ catalogue
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    return 2 * 4096 * dim * 8192 / max(best, 1e-9)


def softmax_epoch_seconds(profile: LogProfile, config: RunConfig, flops: float) -> float:
    """Seconds of one epoch's full-softmax logits: forward, and backward into both sides (3 products)."""
    heads = config.model.n_future_sessions
    pairs = profile.events * heads  # about one pair per event and head
    return 3 * 2 * pairs * profile.items * config.model.dim / flops


def choose(profile: LogProfile, time_budget_s: float, flops: float, protocol: str) -> tuple[RunConfig, list[Choice]]:
    """The run configuration for this log, budget and validation protocol, and the reasons, one per setting."""
    config = RunConfig()
    choices: list[Choice] = []

    def pick(setting: str, value: object, why: str) -> None:
        section, name = setting.split(".")
        setattr(getattr(config, section), name, value)
        choices.append(Choice(setting, value, why))

    if profile.plain_sequence:
        pick("model.layout", "items", "no contexts, impressions or session ids: one token per event in order, "
                                      "the query read at the last one")
        pick("model.n_future_sessions", 1, "items layout: heads for the 2nd and 3rd next event scored no better "
                                           "and cost 3x the softmax (MovieLens-100K)")
    else:
        given = [name for name, present in (("contexts", profile.has_context), ("impressions", profile.has_shows),
                                            ("session ids", profile.has_session_id)) if present]
        pick("model.layout", "sessions", f"{', '.join(given)}: a context token before each session")
    epoch_s = softmax_epoch_seconds(profile, config, flops)
    if epoch_s * MIN_EPOCHS_IN_BUDGET <= time_budget_s * SOFTMAX_BUDGET_SHARE:
        pick("loss.retrieval", "softmax", f"{profile.items:,} items: the full softmax costs ~{epoch_s:.0f} s "
                                          f"an epoch here, {MIN_EPOCHS_IN_BUDGET} epochs fit the budget")
        pick("loss.temperature", SOFTMAX_TEMPERATURE, "the full softmax's best temperature")
    else:
        pick("loss.retrieval", "sampled_softmax", f"{profile.items:,} items: the full softmax would cost "
                                                  f"~{epoch_s:.0f} s an epoch here")
        share = time_budget_s * SOFTMAX_BUDGET_SHARE / (epoch_s * MIN_EPOCHS_IN_BUDGET)  # of the catalogue
        negatives = int(np.clip(2 ** np.floor(np.log2(max(share * profile.items, 1))), MIN_NEGATIVES, MAX_NEGATIVES))
        pick("loss.n_negatives", negatives, f"as many shared negatives as leave {MIN_EPOCHS_IN_BUDGET} epochs in "
                                            f"the budget (between {MIN_NEGATIVES} and {MAX_NEGATIVES})")
        pick("loss.temperature", SAMPLED_TEMPERATURE, "sampled softmax's best temperature")
    steps_per_epoch = -(-profile.users // config.train.batch_size)  # at least one window per user
    pick("train.warmup_steps", min(config.train.warmup_steps, steps_per_epoch),
         f"at most one epoch (~{steps_per_epoch} steps): a longer warm-up is epochs of slow start on small logs")
    if profile.users > config.train.valid_max_cases:
        pick("train.valid_max_cases", min(profile.users, VALID_MAX_CASES),
             "more validation cases: the best of many epochs on 3,000 partly picks their noise")
    holdout_share = min(profile.users, config.train.valid_max_cases) / max(profile.events, 1)
    if protocol == "loo" and holdout_share >= REFIT_MIN_HOLDOUT_SHARE:
        pick("train.refit", True, f"the validation holdout is {holdout_share:.0%} of the events: retrain on "
                                  "everything for the best epoch count, if that fits the budget")
    pick("train.epochs", MAX_EPOCHS, "an upper bound: early stopping or the time budget end the run")
    pick("train.time_budget_s", float(time_budget_s), "stop at the budget, keep the best validation epoch")
    return config, choices


def default_config(log: EventLog | UserShards, time_budget_s: float, device: torch.device,
                   protocol: str) -> tuple[RunConfig, list[Choice]]:
    """What `recall train` trains with when nobody says otherwise, and why."""
    return choose(profile_log(log), time_budget_s, matmul_flops(device), protocol)
