"""The torch-free encoder runner: preallocated inputs built from stored histories give torch's vectors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from contract.events import load_events
from contract.tokens import TOKEN_FEATURES, build_tokens, collate, history_windows, query_tokens, session_table
from contract.vocab import Vocabularies
from service.encoder_runner import InputBuffers, OnnxUserEncoder
from service.settings import container_cpus


def test_buffers_hand_out_zeroed_contiguous_views_and_grow_when_needed():
    buffers = InputBuffers(max_batch=2, max_len=4)
    first = buffers.view(2, 3)
    first["item"][:] = 7
    again = buffers.view(2, 4)
    assert again["item"].shape == (2, 4) and not again["item"].any() and again["item"].flags["C_CONTIGUOUS"]
    assert buffers.view(5, 5)["item"].shape == (5, 5)


def test_encoding_histories_through_preallocated_buffers_matches_the_export(tiny_artifacts, small_world):
    _, artifacts = tiny_artifacts
    directory, _ = small_world
    encoder = OnnxUserEncoder(artifacts / "user_encoder.onnx", json.loads((artifacts / "manifest.json").read_text()),
                              threads=1, max_batch=8)
    log = load_events(directory / "events.parquet", vocabs=Vocabularies.load(artifacts / "vocabularies.json"))
    table = session_table(log, encoder.manifest["feature_schema"]["max_items_per_session"])
    tokens = build_tokens(table)
    users = log.active_users[:8]
    windows = history_windows(table, tokens, users, encoder.max_len)
    query = query_tokens(table, windows, np.zeros(8, np.int64), np.zeros(8, np.int64), np.full(8, 1_770_000_000))
    fresh = collate(tokens, windows, query)
    reused = collate(tokens, windows, query, out=encoder.buffers.view)
    assert all(np.array_equal(fresh[name], reused[name]) for name in TOKEN_FEATURES)
    vectors = encoder.encode(reused)
    assert vectors.shape == (8, encoder.dim)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.abs(vectors - encoder.encode(fresh)).max() == 0.0


def test_runner_sizes_threads_for_the_container_and_imports_no_torch():
    assert 1 <= container_cpus() <= 1024
    # A fresh interpreter: other tests load torch into this one.
    check = ("import sys, service.encoder_runner, index_builder.versions, service.app, service.api.recall, "
             "service.worker, cli.main; sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", check]).returncode == 0
