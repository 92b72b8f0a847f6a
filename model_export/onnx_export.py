"""Torch -> ONNX for the user encoder and the item tower, and the parity check that guards every export."""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from torch import nn

from contract.prefix_state import PREFIX_OUTPUTS, QUERY_FEATURES, QUERY_STEP_INPUTS, prefix_states, query_step_inputs
from contract.tokens import TOKEN_FEATURES
from training.model import RecallModel
from training.query_step import forward_with_prefix, query_step, supports_query_step
from training.text_encoder import TEXT_DIM, MiniLM

logger = logging.getLogger(__name__)
OPSET = 18
PARITY_TOLERANCE = 1e-4  # max abs difference, fp32
QUERY_STEP_MIN_COSINE = 0.9999  # the query step over float16 prefix states against the full encoder


class ParityError(RuntimeError):
    """onnxruntime and torch disagree: the exported graph must not be shipped."""


class UserEncoderGraph(nn.Module):
    """The encoder with one positional input per token feature, as the ONNX graph takes them; a model with a
    query step also returns the prefix state of each row's history (PREFIX_OUTPUTS), for the worker to keep."""

    def __init__(self, model: RecallModel):
        super().__init__()
        self.model = model
        self.with_prefix = supports_query_step(model.config)

    def forward(self, token_type, item, action, context, scenario, hour, weekday, gap, session_pos):
        features = dict(zip(TOKEN_FEATURES, (token_type, item, action, context, scenario, hour, weekday, gap,
                                             session_pos), strict=True))
        return forward_with_prefix(self.model.encoder, features) if self.with_prefix else self.model(features)


class QueryStepGraph(nn.Module):
    """One query token over stored prefix states (QUERY_STEP_INPUTS, float16 keys and values) -> user vectors."""

    def __init__(self, model: RecallModel):
        super().__init__()
        self.model = model

    def forward(self, context, scenario, hour, weekday, gap, session_pos, keys, values, buckets, key_mask, previous):
        query = dict(zip(QUERY_FEATURES, (context, scenario, hour, weekday, gap, session_pos), strict=True))
        return query_step(self.model.encoder, query, keys, values, buckets, key_mask, previous)


class ItemTowerGraph(nn.Module):
    def __init__(self, model: RecallModel):
        super().__init__()
        self.tower = model.item_tower

    def forward(self, item):
        return self.tower(item)


class ContentTowerGraph(nn.Module):
    """An item the model has no id for, from its content: what the service embeds an item added live with."""

    def __init__(self, model: RecallModel):
        super().__init__()
        self.tower = model.item_tower

    def forward(self, category, seller, attributes, text):
        return self.tower.embed_content(category, seller, attributes, text)


CONTENT_INPUTS = ("category", "seller", "attributes", "text")


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            dynamic: dict) -> None:
    # The exporter logs a warning per torchvision operator it cannot register ("torchvision is not installed"):
    # these models use none of them, so the lines are noise.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    with warnings.catch_warnings(), _level(registration, logging.ERROR):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_shapes=dynamic, dynamo=True, opset_version=OPSET, external_data=False,
                          verbose=False)


@contextmanager
def _level(logger: logging.Logger, level: int):
    previous = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous)


def export_user_encoder(model: RecallModel, sample: dict[str, np.ndarray], path: Path) -> None:
    """(B, T) int64 token features -> (B, d) user_vector (and the prefix outputs), both axes dynamic."""
    model.eval()
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", min=2, max=model.config.max_len + 1)
    args = tuple(torch.from_numpy(sample[name][:2]) for name in TOKEN_FEATURES)
    outputs = ["user_vector", *(PREFIX_OUTPUTS if supports_query_step(model.config) else ())]
    _export(UserEncoderGraph(model), args, path, list(TOKEN_FEATURES), outputs,
            {name: {0: batch, 1: length} for name in TOKEN_FEATURES})


def export_query_step(model: RecallModel, sample: dict[str, np.ndarray], path: Path) -> None:
    """QUERY_STEP_INPUTS -> (B, d) user_vector; the batch and the history length are dynamic."""
    model.eval()
    features = {name: torch.from_numpy(sample[name][:2]) for name in TOKEN_FEATURES}
    with torch.no_grad():
        _, keys, values, buckets, previous = forward_with_prefix(model.encoder, features)
    history = slice(0, features["token_type"].shape[1] - 1)  # padding stays, masked out
    args = (*(features[name][:, -1] for name in QUERY_FEATURES), keys[..., history, :].half(),
            values[..., history, :].half(), buckets[:, history], (features["token_type"][:, history] != 0).float(),
            previous)
    batch, n = torch.export.Dim("batch"), torch.export.Dim("history", min=1, max=model.config.max_len)
    dynamic = {**{name: {0: batch} for name in QUERY_FEATURES}, "keys": {0: batch, 3: n}, "values": {0: batch, 3: n},
               "buckets": {0: batch, 1: n}, "key_mask": {0: batch, 1: n}, "previous": {0: batch}}
    _export(QueryStepGraph(model), args, path, list(QUERY_STEP_INPUTS), ["user_vector"], dynamic)


def export_item_tower(model: RecallModel, path: Path) -> None:
    """(N,) int64 item codes -> (N, d) item_vector."""
    model.eval()
    _export(ItemTowerGraph(model), (torch.arange(1, 4),), path, ["item"], ["item_vector"],
            {"item": {0: torch.export.Dim("items")}})


def export_content_tower(model: RecallModel, path: Path) -> None:
    """(N,) category and seller codes, (N, A) attribute codes, (N, 384) text vectors -> (N, d) item_vector."""
    model.eval()
    items = torch.arange(1, 3)
    tower = model.item_tower
    args = (tower.item_category[items], tower.item_seller[items],
            torch.zeros(2, model.sizes.get("max_attributes", 1), dtype=torch.long), torch.rand(2, TEXT_DIM))
    batch = torch.export.Dim("items")
    _export(ContentTowerGraph(model), args, path, list(CONTENT_INPUTS), ["item_vector"],
            {name: {0: batch} for name in CONTENT_INPUTS})


def content_inputs(model: RecallModel, items: np.ndarray) -> dict[str, np.ndarray]:
    """The content tower's inputs for catalogue items, from the tower's own buffers."""
    tower, codes = model.item_tower, torch.from_numpy(items)
    attributes = tower.item_attributes[codes] if model.config.item_attributes else \
        torch.zeros(len(items), model.sizes.get("max_attributes", 1), dtype=torch.long)
    text = tower.item_text[codes].float() if model.config.item_text else torch.zeros(len(items), TEXT_DIM)
    return {"category": tower.item_category[codes].numpy(), "seller": tower.item_seller[codes].numpy(),
            "attributes": attributes.numpy(), "text": text.numpy()}


def export_text_encoder(text_encoder: MiniLM, path: Path) -> None:
    """(B, L) int64 word-piece ids and mask -> (B, 384) text_vector; both axes dynamic."""
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", min=2, max=512)
    args = (torch.tensor([[101, 2417, 102], [101, 2417, 102]]), torch.ones(2, 3, dtype=torch.long))
    _export(text_encoder.eval(), args, path, ["ids", "mask"], ["text_vector"],
            {"ids": {0: batch, 1: length}, "mask": {0: batch, 1: length}})


def check_content_parity(model: RecallModel, content_path: Path, text_encoder: MiniLM | None,
                         text_path: Path | None, sample_texts: list[str]) -> float:
    """Max abs difference of onnxruntime against torch for the content tower (on the catalogue's own content)
    and the text encoder (on item texts); raises `ParityError` above the tolerance."""
    from contract.item_text import TextTokenizer

    content = ort.InferenceSession(str(content_path), providers=["CPUExecutionProvider"])
    items = np.arange(1, model.item_tower.n_items, dtype=np.int64)[: 4096]
    inputs = content_inputs(model, items)
    with torch.no_grad():
        expected = model.item_tower.embed_content(*(torch.from_numpy(inputs[name]) for name in CONTENT_INPUTS))
        worst = float(np.abs(content.run(None, inputs)[0] - expected.numpy()).max())
        if text_path is not None:
            encoder = ort.InferenceSession(str(text_path), providers=["CPUExecutionProvider"])
            for texts in (sample_texts[:1], sample_texts):
                ids, mask = TextTokenizer.packaged()(texts)
                expected = text_encoder(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
                worst = max(worst, float(np.abs(encoder.run(None, {"ids": ids, "mask": mask})[0] - expected).max()))
    if not np.isfinite(worst) or worst > PARITY_TOLERANCE:
        raise ParityError(f"content tower or text encoder: onnxruntime differs from torch by {worst:.2e} "
                          f"(tolerance {PARITY_TOLERANCE:.0e})")
    return worst


def check_parity(model: RecallModel, encoder_path: Path, tower_path: Path, sample: dict[str, np.ndarray],
                 query_step_path: Path | None = None) -> float:
    """Max abs difference of onnxruntime against torch on real inputs, over several batch shapes; raises
    `ParityError` above the tolerance. With `query_step_path`, also the query step over the encoder's own
    float16 prefix states in other contexts and at other times, against the full encoder (cosine)."""
    encoder = ort.InferenceSession(str(encoder_path), providers=["CPUExecutionProvider"])
    tower = ort.InferenceSession(str(tower_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    with torch.no_grad():
        for rows in (slice(0, 1), slice(0, len(sample["item"])), slice(len(sample["item"]) - 1, None)):
            batch = {name: np.ascontiguousarray(sample[name][rows]) for name in TOKEN_FEATURES}
            expected = model({name: torch.from_numpy(values) for name, values in batch.items()}).numpy()
            got = encoder.run(None, batch)[0]
            worst = max(worst, float(np.abs(got - expected).max()))
        items = np.arange(model.item_tower.n_items, dtype=np.int64)[: 4096]
        expected_items = model.item_tower(torch.from_numpy(items)).numpy()
        worst = max(worst, float(np.abs(tower.run(None, {"item": items})[0] - expected_items).max()))
    if not np.isfinite(worst) or worst > PARITY_TOLERANCE:
        raise ParityError(f"onnxruntime differs from torch by {worst:.2e} (tolerance {PARITY_TOLERANCE:.0e})")
    if query_step_path is not None:
        cosine = _query_step_cosine(model, encoder, query_step_path, sample)
        if not np.isfinite(cosine) or cosine < QUERY_STEP_MIN_COSINE:
            raise ParityError(f"the query step's vectors reach cosine {cosine:.6f} of the full encoder's "
                              f"(at least {QUERY_STEP_MIN_COSINE} needed)")
        logger.info("query step parity: worst cosine %.7f", cosine)
    logger.info("parity: max abs difference %.2e", worst)
    return worst


def _query_step_cosine(model: RecallModel, encoder: ort.InferenceSession, query_step_path: Path,
                       sample: dict[str, np.ndarray]) -> float:
    """The worst cosine between the query step over stored prefixes and the full encoder, every sample history
    asked in another row's context, scenario and time, and in the default context."""
    stepper = ort.InferenceSession(str(query_step_path), providers=["CPUExecutionProvider"])
    batch = {name: np.ascontiguousarray(sample[name]) for name in TOKEN_FEATURES}
    outputs = dict(zip(["user_vector", *PREFIX_OUTPUTS], encoder.run(None, batch), strict=True))
    n_rows = len(batch["item"])
    states = prefix_states(batch, outputs, list(range(n_rows)), [0] * n_rows, "", [""] * n_rows)
    worst = 1.0
    for shift, default_context in ((1, False), (2, True)):
        asked = {name: np.roll(batch[name][:, -1], shift) for name in ("context", "scenario", "hour", "weekday", "gap")}
        if default_context:
            asked["context"] = np.zeros(n_rows, dtype=np.int64)
        inputs = query_step_inputs(states, asked["context"], asked["scenario"], np.zeros(n_rows, np.int64), False)
        inputs.update({name: asked[name] for name in ("hour", "weekday", "gap")})
        stepped = stepper.run(None, inputs)[0]
        full = {name: values.copy() for name, values in batch.items()}
        for name, values in asked.items():
            full[name][:, -1] = values
        with torch.no_grad():
            expected = model({name: torch.from_numpy(values) for name, values in full.items()}).numpy()
        cosine = (stepped * expected).sum(-1) / np.linalg.norm(stepped, axis=-1) / np.linalg.norm(expected, axis=-1)
        worst = min(worst, float(cosine.min()))
    return worst
