"""A training run -> a versioned artifact directory the serving side reads without torch.

    ARTIFACTS/
      manifest.json          model version (content hash), encoder, dims, vocab sizes, feature schema, checksums
      user_encoder.onnx      (B, T) token features -> (B, d) unit user vectors (session layout: and prefix states)
      query_step.onnx        session layout only: a request's context token over a stored prefix state -> vector
      item_tower.onnx        (N,) item codes -> (N, d) unit item vectors
      item_vectors.npy       (n_items, d) float32, row 0 is padding
      content_tower.onnx     with item content: category, seller, attributes, text vector -> vector (items added live)
      text_encoder.onnx      when the tower reads text: (B, L) word pieces -> (B, 384) sentence vectors, and
      tokenizer.json         the word pieces' tokenizer (all-MiniLM-L6-v2)
      item_side.npz          category and seller code of every item (for category filters)
      vocabularies.json      original ids <-> codes
      sample_inputs.npz      real encoder inputs, and sample_user_vectors.npy their vectors (index recall checks)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from contract.errors import DataError
from contract.file_io import replace_dir, sha256_file
from contract.item_text import TEXT_MODEL_NAME, TextTokenizer
from contract.manifests import CONTENT_TOWER_FILE, QUERY_STEP_FILE, TEXT_FILES, FeatureSchema
from contract.tokens import TOKEN_FEATURES
from model_export.onnx_export import (
    OPSET,
    check_content_parity,
    check_parity,
    export_content_tower,
    export_item_tower,
    export_query_step,
    export_text_encoder,
    export_user_encoder,
)
from training.config import reads_event_sessions, uses_context_tokens
from training.query_step import supports_query_step
from training.run_dir import load_run
from training.text_encoder import load_minilm

CHECKSUMMED = ("user_encoder.onnx", "item_tower.onnx", "item_vectors.npy", "item_side.npz", "vocabularies.json")
# The text encoder's parity inputs: short and long, plain and accented (the run does not keep item texts).
TEXT_PARITY_SAMPLES = ["red running shoes", "Ünïcödé café crème brûlée",
                       " ".join(["a long product description with many words"] * 20)]


def feature_schema(run) -> FeatureSchema:
    """How events become encoder inputs: what the near-line worker must reproduce exactly."""
    model_config, data = run.config.model, run.metrics.get("data", {})
    return FeatureSchema(with_context_tokens=uses_context_tokens(model_config),
                         event_sessions=reads_event_sessions(model_config), max_len=model_config.max_len,
                         max_items_per_session=model_config.max_items_per_session,
                         session_gap_s=data.get("session_gap_s", 1800), has_timestamp=data.get("has_timestamp", True),
                         context_free=not supports_query_step(model_config))


def export_run(run_path: str | Path, out: str | Path, on_step: Callable[[str], None] = lambda step: None) -> dict:
    """Export, check parity, write the manifest; the directory appears only once everything passed. `on_step` is
    told each step as it starts (the CLI shows it)."""
    run_path, out = Path(run_path), Path(out)
    run = load_run(run_path)
    if run.sample_inputs is None:
        raise DataError(str(run_path), "the run has no sample_inputs.npz to check the export against; retrain it")
    started = time.perf_counter()
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model = run.model.eval()
    on_step("user encoder -> ONNX")
    export_user_encoder(model, run.sample_inputs, tmp / "user_encoder.onnx")
    on_step("item tower -> ONNX")
    export_item_tower(model, tmp / "item_tower.onnx")
    files = CHECKSUMMED
    if supports_query_step(run.config.model):
        on_step("query step -> ONNX")
        export_query_step(model, run.sample_inputs, tmp / QUERY_STEP_FILE)
        files = (*CHECKSUMMED, QUERY_STEP_FILE)
    if run.config.model.item_content:  # a model that knows items only by id cannot embed a new one
        on_step("content tower -> ONNX")
        export_content_tower(model, tmp / CONTENT_TOWER_FILE)
        files = (*files, CONTENT_TOWER_FILE)
    reads_text = run.config.model.item_text or run.config.model.semantic_id_levels > 0
    text_encoder = load_minilm() if reads_text else None
    if text_encoder is not None:
        on_step("text encoder -> ONNX")
        export_text_encoder(text_encoder, tmp / TEXT_FILES[0])
        (tmp / TEXT_FILES[1]).write_text(TextTokenizer.packaged().json)
        files = (*files, *TEXT_FILES)
    on_step("parity check: onnxruntime against torch")
    parity = check_parity(model, tmp / "user_encoder.onnx", tmp / "item_tower.onnx", run.sample_inputs,
                          tmp / QUERY_STEP_FILE if QUERY_STEP_FILE in files else None)
    if CONTENT_TOWER_FILE in files:
        parity = max(parity, check_content_parity(model, tmp / CONTENT_TOWER_FILE, text_encoder,
                                                  tmp / TEXT_FILES[0] if reads_text else None, TEXT_PARITY_SAMPLES))
    with torch.no_grad():
        np.save(tmp / "item_vectors.npy", model.item_vectors().numpy().astype(np.float32))
        sample_vectors = model({name: torch.from_numpy(run.sample_inputs[name]) for name in TOKEN_FEATURES})
    np.save(tmp / "sample_user_vectors.npy", sample_vectors.numpy().astype(np.float32))
    np.savez_compressed(tmp / "sample_inputs.npz", **run.sample_inputs)
    np.savez(tmp / "item_side.npz", category=model.item_tower.item_category.numpy(),
             seller=model.item_tower.item_seller.numpy())
    shutil.copy(run_path / "vocabularies.json", tmp / "vocabularies.json")
    checksums = {name: sha256_file(tmp / name) for name in files}
    manifest = {
        "model_version": hashlib.sha256("".join(checksums[n] for n in files).encode()).hexdigest()[:16],
        "encoder": run.config.model.encoder, "dim": run.config.model.dim, "metric": "inner_product",
        "normalized": True, "n_items": int(model.item_tower.n_items), "vocab_sizes": run.vocabs.sizes(),
        "max_len": run.config.model.max_len, "feature_schema": feature_schema(run).model_dump(), "opset": OPSET,
        "query_step": QUERY_STEP_FILE in files, "parity_max_abs_diff": parity,
        "content": {"attributes": run.config.model.item_attributes, "text": run.config.model.item_text,
                    "semantic_id_levels": run.config.model.semantic_id_levels,
                    "max_attributes": int(model.sizes.get("max_attributes", 1)),
                    "text_encoder": TEXT_MODEL_NAME if reads_text else None}
        if CONTENT_TOWER_FILE in files else None, "run": str(run_path.resolve()),
        "parent_run": run.metrics.get("parent_run"),
        "run_metrics": run.metrics.get("validation", {}), "model_config": run.config.to_dict()["model"],
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"), "export_seconds": 0.0,
        "checksums": checksums,
    }
    manifest["export_seconds"] = round(time.perf_counter() - started, 2)
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    replace_dir(tmp, out)
    return manifest
