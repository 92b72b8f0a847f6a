"""bench/cold_items.py trains each data set once: a row's model must be what training that row alone gives."""

from __future__ import annotations

from dataclasses import replace

import torch

from bench.cold_items import TOWERS, with_own_head
from tests.support.runs import catalogue_with_new_items
from training.config import ModelConfig, RunConfig, TrainConfig
from training.trainer import train


def test_a_row_fitted_on_the_shared_model_is_the_row_trained_alone(tmp_path):
    log = catalogue_with_new_items(tmp_path)
    base = RunConfig(model=ModelConfig(dim=16, n_heads=2, max_len=16),
                     train=TrainConfig(epochs=2, batch_size=32, seed=3, threads=1))
    row = replace(base, model=replace(base.model, **TOWERS["+ attributes"]))
    everything = train(log, replace(base, model=replace(base.model, **TOWERS["+ semantic ids"])), protocol="loo",
                       show_progress=False)
    alone = train(log, row, protocol="loo", show_progress=False).model
    torch.manual_seed(99)  # whatever random state the bench is in by then
    shared = with_own_head(everything.model, log, row)
    expected, got = alone.state_dict(), shared.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.allclose(value, got[name], atol=1e-6) for name, value in expected.items())
    assert shared.content_stats["head"] == alone.content_stats["head"]
