"""The packaged sentence encoder, written out in plain PyTorch, gives the published all-MiniLM-L6-v2 vectors, and
each distinct text is embedded once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training import text_encoder
from training.text_encoder import TEXT_DIM, embed_texts


def test_the_encoder_reproduces_the_published_similarities(tmp_path):
    # sentence-transformers' quick start prints these cosines for all-MiniLM-L6-v2: 0.6660, 0.1046, 0.1411
    vectors = embed_texts(["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."],
                          tmp_path / "cache.npz")
    cosines = vectors @ vectors.T
    assert cosines[0, 1] == pytest.approx(0.6660, abs=5e-4)
    assert cosines[0, 2] == pytest.approx(0.1046, abs=5e-4)
    assert cosines[1, 2] == pytest.approx(0.1411, abs=5e-4)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_texts_are_embedded_once_and_an_empty_text_is_zeros(tmp_path, monkeypatch):
    cache = tmp_path / "cache.npz"
    first = embed_texts(["red running shoes", "steel saucepan"], cache)
    monkeypatch.setattr(text_encoder, "load_minilm", lambda: pytest.fail("embedded a cached text again"))
    again = embed_texts(["steel saucepan", "", "red running shoes"], cache)
    assert np.array_equal(again[[2, 0]], first)
    assert again.shape == (3, TEXT_DIM) and not again[1].any()


def test_embedding_new_texts_leaves_a_seeded_training_run_unchanged(tmp_path):
    # A text missing from the cache builds the encoder; a run that embeds its items' texts must train the same
    # model whether or not the cache held them (CI on a fresh machine caught the difference once).
    torch.manual_seed(0)
    state = torch.random.get_rng_state()
    embed_texts(["a text no cache holds"], tmp_path / "cache.npz")
    assert torch.equal(torch.random.get_rng_state(), state)
