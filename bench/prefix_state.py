"""The prefix state by history length: its size in Redis, and the query step against encoding the whole history.

    python bench/prefix_state.py [--repeats 200]

The default model's shape (d=64, 2 HSTU blocks, 2 heads; untrained: neither size nor speed depends on training),
histories of 50, 200 and 1,000 tokens. For each: the bytes of one user's prefix state and what Redis holds for it
(MEMORY USAGE of the key, allocator rounding included) and so for 100k and 1M users; the median ms per request of
the query step (its inputs built from the stored bytes, then `query_step.onnx`) against the full encoder
(`user_encoder.onnx`, batch 1), both on one onnxruntime thread; and the cosine of their vectors for a context the
prefix was not computed with. Writes bench/results/prefix_state.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import onnxruntime as ort
from rich.table import Table

from bench.encoder import SIZES, fake_inputs, median_ms
from cli.console import make_console
from contract.prefix_state import PREFIX_OUTPUTS, PrefixState, prefix_states, query_step_inputs
from contract.tokens import TOKEN_FEATURES
from model_export.onnx_export import export_query_step, export_user_encoder
from service.encoder_runner import session_options
from service.redis_server import EmbeddedRedis
from training.config import ModelConfig
from training.model import RecallModel

RESULTS = Path(__file__).resolve().parent / "results"
LENGTHS = (50, 200, 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    model = RecallModel(ModelConfig(dim=64, n_layers=2, n_heads=2, max_len=1000), SIZES).eval()
    console = make_console()
    rows = []
    with tempfile.TemporaryDirectory() as directory:
        encoder_path, step_path = Path(directory) / "user_encoder.onnx", Path(directory) / "query_step.onnx"
        with console.status("exporting the encoder and the query step"):
            sample = fake_inputs(2, 60, rng)
            export_user_encoder(model, sample, encoder_path)
            export_query_step(model, sample, step_path)
        encoder = ort.InferenceSession(str(encoder_path), session_options(1), providers=["CPUExecutionProvider"])
        stepper = ort.InferenceSession(str(step_path), session_options(1), providers=["CPUExecutionProvider"])
        with EmbeddedRedis(Path(directory) / "redis", persistence=False) as server:
            client = server.client()
            for length in LENGTHS:
                inputs = fake_inputs(1, length, rng)
                outputs = dict(zip(["user_vector", *PREFIX_OUTPUTS], encoder.run(None, inputs), strict=True))
                [state] = prefix_states(inputs, outputs, [0], [1_767_000_000], "0123456789abcdef", ["1-0"])
                raw = state.to_bytes()
                client.set(f"prefix:{length}", raw)
                redis_bytes = int(client.memory_usage(f"prefix:{length}"))
                # A request in another context than the one the prefix was computed with, at the same time.
                asked = {name: values.copy() for name, values in inputs.items()}
                asked["context"][0, -1] = (inputs["context"][0, -1] + 7) % SIZES["contexts"]

                def step(raw=raw, asked=asked):
                    prefix = PrefixState.from_bytes(raw)
                    step_inputs = query_step_inputs([prefix], asked["context"][:, -1], asked["scenario"][:, -1],
                                                    np.zeros(1, np.int64), False)
                    step_inputs.update({name: asked[name][:, -1] for name in ("hour", "weekday", "gap")})
                    return stepper.run(None, step_inputs)[0]

                def full(asked=asked):
                    return encoder.run(["user_vector"], {name: asked[name] for name in TOKEN_FEATURES})[0]

                stepped, encoded = step()[0], full()[0]
                rows.append({
                    "tokens": length, "history_tokens": state.n_tokens, "value_bytes": len(raw),
                    "redis_bytes": redis_bytes, "redis_gb_100k_users": redis_bytes * 1e5 / 1e9,
                    "redis_gb_1m_users": redis_bytes * 1e6 / 1e9,
                    "query_step_ms": median_ms(step, args.repeats), "full_encode_ms": median_ms(full, args.repeats),
                    "cosine": float(stepped @ encoded / np.linalg.norm(stepped) / np.linalg.norm(encoded))})
    table = Table(title="Prefix state per user (d=64, 2 blocks, float16) and the request it serves, 1 thread")
    for column in ("tokens", "value bytes", "Redis bytes", "100k users", "1M users", "query step ms",
                   "full encode ms", "speed-up", "cosine"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["tokens"]), f"{row['value_bytes']:,}", f"{row['redis_bytes']:,}",
                      f"{row['redis_gb_100k_users']:.1f} GB", f"{row['redis_gb_1m_users']:.0f} GB",
                      f"{row['query_step_ms']:.3f}", f"{row['full_encode_ms']:.3f}",
                      f"{row['full_encode_ms'] / row['query_step_ms']:.0f}x", f"{row['cosine']:.7f}")
    console.print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "prefix_state.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
