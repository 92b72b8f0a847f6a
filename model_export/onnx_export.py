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

from contract.tokens import TOKEN_FEATURES
from training.model import RecallModel

logger = logging.getLogger(__name__)
OPSET = 18
PARITY_TOLERANCE = 1e-4  # max abs difference, fp32


class ParityError(RuntimeError):
    """onnxruntime and torch disagree: the exported graph must not be shipped."""


class UserEncoderGraph(nn.Module):
    """The encoder with one positional input per token feature, as the ONNX graph takes them."""

    def __init__(self, model: RecallModel):
        super().__init__()
        self.model = model

    def forward(self, token_type, item, action, context, scenario, hour, weekday, gap, session_pos):
        features = dict(zip(TOKEN_FEATURES, (token_type, item, action, context, scenario, hour, weekday, gap,
                                             session_pos), strict=True))
        return self.model(features)


class ItemTowerGraph(nn.Module):
    def __init__(self, model: RecallModel):
        super().__init__()
        self.tower = model.item_tower

    def forward(self, item):
        return self.tower(item)


def _export(module: nn.Module, args: tuple, path: Path, input_names: list[str], output_name: str,
            dynamic: dict) -> None:
    # The exporter logs a warning per torchvision operator it cannot register ("torchvision is not installed"):
    # these models use none of them, so the lines are noise.
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    with warnings.catch_warnings(), _level(registration, logging.ERROR):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=input_names, output_names=[output_name],
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
    """(B, T) int64 token features -> (B, d) user_vector, both axes dynamic."""
    model.eval()
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", min=2, max=model.config.max_len + 1)
    args = tuple(torch.from_numpy(sample[name][:2]) for name in TOKEN_FEATURES)
    _export(UserEncoderGraph(model), args, path, list(TOKEN_FEATURES), "user_vector",
            {name: {0: batch, 1: length} for name in TOKEN_FEATURES})


def export_item_tower(model: RecallModel, path: Path) -> None:
    """(N,) int64 item codes -> (N, d) item_vector."""
    model.eval()
    _export(ItemTowerGraph(model), (torch.arange(1, 4),), path, ["item"], "item_vector",
            {"item": {0: torch.export.Dim("items")}})


def check_parity(model: RecallModel, encoder_path: Path, tower_path: Path, sample: dict[str, np.ndarray]) -> float:
    """Max abs difference of onnxruntime against torch on real inputs, over several batch shapes; raises
    `ParityError` above the tolerance."""
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
    logger.info("parity: max abs difference %.2e", worst)
    return worst
