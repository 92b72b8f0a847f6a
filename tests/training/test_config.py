"""Run configurations: TOML layering and refusal of bad values, naming the field."""

import math

import pytest

from training.config import RunConfig


@pytest.mark.parametrize(("payload", "field"), [
    ({"model": {"attention_mask": "sesion"}}, "model.attention_mask"),
    ({"model": {"positions": "rope"}}, "model.positions"),
    ({"model": {"layout": "item"}}, "model.layout"),
    ({"loss": {"negatives": "inbatch"}}, "loss.negatives"),
    ({"loss": {"retrieval": "soft_max"}}, "loss.retrieval"),
    ({"train": {"device": "gpu"}}, "train.device"),
    ({"train": {"epochs": "ten"}}, "train.epochs"),
    ({"train": {"amp": "yes"}}, "train.amp"),
    ({"loss": {"temperature": math.nan}}, "loss.temperature"),
    ({"train": {"lr": math.inf}}, "train.lr"),
    ({"model": {"dim": True}}, "model.dim"),  # strict: a boolean is not an integer, nor is 64.5
    ({"model": {"dim": 64.5}}, "model.dim"),
    ({"model": {"dropout": 1.5}}, "model.dropout"),
    ({"train": {"batch_size": 0}}, "train.batch_size"),
])
def test_a_bad_value_is_refused_naming_its_field(payload, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        RunConfig().updated(payload).validate()


def test_a_typo_in_a_section_or_option_is_refused():
    with pytest.raises(ValueError, match="unknown section"):
        RunConfig().updated({"modle": {}})
    with pytest.raises(ValueError, match="attention_masks"):
        RunConfig().updated({"model": {"attention_masks": "session"}})


def test_integers_are_accepted_where_a_number_is_expected():
    config = RunConfig().updated({"loss": {"temperature": 1}, "train": {"lr": 1}}).validate()
    assert config.loss.temperature == 1

