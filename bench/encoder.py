"""User-encoder latency: torch eager against onnxruntime, batch 1 and 64, at 50, 200 and 1000 tokens.

    python bench/encoder.py [--threads 1] [--repeats 50] [--quick]

Prints a table (median ms per call, users encoded per second, speed-up) and writes bench/results/encoder.json.
Target (issue 4): onnxruntime at least 1.5x faster than torch eager at batch 1, 200 tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import onnxruntime as ort
import torch
from rich.table import Table

from cli.console import make_console
from contract.tokens import TOKEN_FEATURES
from model_export.onnx_export import export_user_encoder
from service.encoder_runner import session_options
from training.config import ModelConfig
from training.model import RecallModel

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = {"items": 50_000, "contexts": 100, "scenarios": 4, "categories": 200, "sellers": 2000, "users": 1}


def fake_inputs(batch: int, length: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Sessions of 20 tokens (a context token, then items), the query token last."""
    position = np.arange(length)
    session = position // 20
    token_type = np.where(position % 20 == 0, 1, 2)
    token_type[-1], session[-1] = 1, session[-2] + 1
    features = {name: np.zeros((batch, length), dtype=np.int64) for name in TOKEN_FEATURES}
    features["token_type"][:] = token_type
    features["session_pos"][:] = session
    features["item"][:] = np.where(token_type == 2, rng.integers(1, SIZES["items"], (batch, length)), 0)
    features["action"][:] = np.where(token_type == 2, 1, 0)
    features["context"][:] = np.where(token_type == 1, rng.integers(0, 100, (batch, length)), 0)
    for name, high in (("scenario", 4), ("hour", 25), ("weekday", 8), ("gap", 20)):
        features[name][:] = rng.integers(1, high, (batch, length))
    return features


def median_ms(call, repeats: int) -> float:
    for _ in range(3):
        call()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        timings.append((time.perf_counter() - started) * 1000)
    return float(np.median(timings))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="threads for torch and onnxruntime alike")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="200 tokens only")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    model = RecallModel(ModelConfig(dim=64, n_layers=2, n_heads=2, max_len=1000), SIZES).eval()
    console = make_console()
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "user_encoder.onnx"
        with console.status("exporting the encoder"):
            export_user_encoder(model, fake_inputs(2, 60, rng), path)
        session = ort.InferenceSession(str(path), session_options(args.threads), providers=["CPUExecutionProvider"])
        for length in ([200] if args.quick else [50, 200, 1000]):
            for batch in (1, 64):
                inputs = fake_inputs(batch, length, rng)
                tensors = {name: torch.from_numpy(values) for name, values in inputs.items()}
                repeats = max(5, args.repeats // (8 if batch > 1 else 1))

                def eager(tensors=tensors):
                    with torch.inference_mode():
                        model(tensors)

                torch_ms = median_ms(eager, repeats)
                ort_ms = median_ms(lambda inputs=inputs: session.run(["user_vector"], inputs), repeats)
                rows.append({"tokens": length, "batch": batch, "torch_ms": torch_ms, "onnxruntime_ms": ort_ms,
                             "speedup": torch_ms / ort_ms, "users_per_s": batch / ort_ms * 1000})
    table = Table(title=f"TBGRecall user encoder (d=64, 2 HSTU blocks), {args.threads} thread(s), median per call")
    for column in ("tokens", "batch", "torch eager ms", "onnxruntime ms", "speed-up", "users/s (ORT)"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["tokens"]), str(row["batch"]), f"{row['torch_ms']:.2f}",
                      f"{row['onnxruntime_ms']:.2f}", f"{row['speedup']:.2f}x", f"{row['users_per_s']:,.0f}")
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "encoder.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
