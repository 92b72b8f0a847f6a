"""Vocabularies grow without renumbering and round-trip through JSON."""

from __future__ import annotations

import json

import numpy as np

from contract.events import load_events
from contract.vocab import Vocabularies, Vocabulary


def test_growing_keeps_existing_codes():
    vocab = Vocabulary("items")
    first = vocab.encode(np.array(["a", "b", "a"]))
    second = vocab.encode(np.array(["c", "b", "d"]))
    assert list(first) == [1, 2, 1]
    assert list(second) == [3, 2, 4]  # "b" keeps code 2; new ids are appended
    assert vocab.ids == ["<reserved>", "a", "b", "c", "d"]


def test_frozen_vocabulary_maps_unknown_ids_to_zero():
    vocab = Vocabulary("items")
    vocab.encode(np.array([10, 20]))
    assert list(vocab.encode(np.array([20, 30]), grow=False)) == [2, 0]
    assert len(vocab) == 3


def test_integer_ids_stay_integers_until_a_text_id_arrives():
    vocab = Vocabulary("users")
    vocab.encode(np.array([5, 6]))
    assert vocab.id_kind == "int" and list(vocab.decode(np.array([1, 2]))) == [5, 6]
    vocab.encode(np.array(["guest"]))
    assert vocab.id_kind == "str"


def test_save_and_load_round_trip_as_plain_json(tmp_path):
    vocabs = Vocabularies()
    vocabs.items.encode(np.array(["x", "y"]))
    vocabs.contexts.encode(np.array(["home"]))
    path = tmp_path / "vocabularies.json"
    vocabs.save(path)
    assert json.loads(path.read_text())["items"]["ids"] == ["<reserved>", "x", "y"]  # JSON, not pickle
    loaded = Vocabularies.load(path)
    assert loaded.items.ids == vocabs.items.ids and loaded.contexts.code_of("home") == 1


def test_incremental_load_keeps_old_codes_and_adds_new_ones(write_csv):
    day1 = load_events(write_csv([{"user_id": 1, "item_id": "a"}, {"user_id": 1, "item_id": "b"}], "day1.csv"))
    day2 = load_events(write_csv([{"user_id": 2, "item_id": "c"}, {"user_id": 2, "item_id": "a"}], "day2.csv"),
                       vocabs=day1.vocabs)
    assert day2.vocabs.items.code_of("a") == 1 and day2.vocabs.items.code_of("b") == 2
    assert day2.vocabs.items.code_of("c") == 3
    assert day2.n_items == 4
