"""ONNX export: parity with torch for every encoder, the manifest, and the vocabularies that ship with it."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from contract.tokens import TOKEN_FEATURES
from contract.vocab import Vocabularies
from model_export import onnx_export
from model_export.export import export_run
from service.encoder_runner import OnnxUserEncoder, session_options
from tests.support.runs import train_tiny_run

pytestmark = pytest.mark.integration  # each test runs the ONNX exporter on a trained model


@pytest.mark.parametrize(("encoder", "layout"), [("tbgrecall", "sessions"), ("tbgrecall", "items"),
                                                 ("sasrec", "sessions"), ("bert4rec", "sessions")])
def test_export_matches_torch_for_every_encoder(encoder, layout, tiny_world, tmp_path):
    run = train_tiny_run(tiny_world, tmp_path / "run", encoder=encoder, layout=layout)
    manifest = export_run(run, tmp_path / "artifacts")
    assert manifest["encoder"] == encoder
    assert manifest["parity_max_abs_diff"] <= 1e-4
    # Only the session layout reads the request's context token, so only it gets a query step; the others' one
    # precomputed vector serves every context.
    session_layout = (encoder, layout) == ("tbgrecall", "sessions")
    assert manifest["query_step"] == session_layout == (tmp_path / "artifacts" / "query_step.onnx").exists()
    assert manifest["feature_schema"]["context_free"] == (not session_layout)
    # The runner the worker uses reproduces torch's vectors on the run's real histories, at any batch size.
    sample = dict(np.load(tmp_path / "artifacts" / "sample_inputs.npz"))
    expected = np.load(tmp_path / "artifacts" / "sample_user_vectors.npy")
    runner = OnnxUserEncoder(tmp_path / "artifacts" / "user_encoder.onnx", manifest, threads=1)
    for rows in (slice(0, 1), slice(0, 7), slice(None)):
        got = runner.encode({name: np.ascontiguousarray(sample[name][rows]) for name in TOKEN_FEATURES})
        assert np.abs(got - expected[rows]).max() <= 1e-4
    # item_tower.onnx embeds items without torch (the service does not call it yet: new items need a re-export).
    tower = ort.InferenceSession(str(tmp_path / "artifacts" / "item_tower.onnx"), session_options(1),
                                 providers=["CPUExecutionProvider"])
    vectors = tower.run(None, {"item": np.arange(manifest["n_items"], dtype=np.int64)})[0]
    assert np.abs(vectors - np.load(tmp_path / "artifacts" / "item_vectors.npy")).max() <= 1e-4


def test_an_item_tower_with_content_exports_with_its_text_vectors_and_codes(tiny_world, tmp_path):
    run = train_tiny_run(tiny_world, tmp_path / "run", item_attributes=True, item_text=True, semantic_id_levels=2)
    manifest = export_run(run, tmp_path / "artifacts")
    assert manifest["parity_max_abs_diff"] <= 1e-4
    tower = ort.InferenceSession(str(tmp_path / "artifacts" / "item_tower.onnx"), session_options(1),
                                 providers=["CPUExecutionProvider"])
    vectors = tower.run(None, {"item": np.arange(manifest["n_items"], dtype=np.int64)})[0]
    assert np.abs(vectors - np.load(tmp_path / "artifacts" / "item_vectors.npy")).max() <= 1e-4


def test_manifest_and_vocabularies_round_trip(tiny_artifacts):
    run, artifacts = tiny_artifacts
    manifest = json.loads((artifacts / "manifest.json").read_text())
    assert set(manifest) >= {"model_version", "encoder", "dim", "vocab_sizes", "max_len", "feature_schema", "opset",
                             "parent_run", "run_metrics", "created_at", "checksums"}
    assert manifest["feature_schema"]["token_features"] == list(TOKEN_FEATURES)
    assert manifest["feature_schema"]["max_items_per_session"] == 32
    shipped, trained = Vocabularies.load(artifacts / "vocabularies.json"), Vocabularies.load(run / "vocabularies.json")
    assert shipped.items.ids == trained.items.ids and shipped.contexts.ids == trained.contexts.ids
    assert manifest["vocab_sizes"] == shipped.sizes()
    assert np.load(artifacts / "item_vectors.npy").shape == (manifest["n_items"], manifest["dim"])


def test_model_version_is_a_content_hash(tiny_artifacts, tmp_path):
    run, artifacts = tiny_artifacts
    again = export_run(run, tmp_path / "again")
    assert again["model_version"] == json.loads((artifacts / "manifest.json").read_text())["model_version"]


@pytest.mark.parametrize(("setting", "value", "message"), [("PARITY_TOLERANCE", -1.0, "differs from torch"),
                                                           ("QUERY_STEP_MIN_COSINE", 1.01, "query step")])
def test_failed_parity_check_writes_nothing(setting, value, message, tiny_world, tmp_path, monkeypatch):
    run = train_tiny_run(tiny_world, tmp_path / "run", epochs=0)
    monkeypatch.setattr(onnx_export, setting, value)
    with pytest.raises(onnx_export.ParityError, match=message):
        export_run(run, tmp_path / "artifacts")
    assert not (tmp_path / "artifacts").exists()
