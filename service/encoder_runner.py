"""The ONNX user encoder and item tower for the worker and the API: onnxruntime only, no torch.

CPU execution provider by default with explicit thread counts sized for the container (cgroup quota and CPU
affinity, not the host's core count); the CUDA provider first when onnxruntime-gpu sees a GPU. Inputs are
written into preallocated buffers, so encoding many users allocates nothing per call.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from contract.prefix_state import PREFIX_OUTPUTS, QUERY_STEP_INPUTS
from contract.tokens import TOKEN_FEATURES
from service.settings import container_cpus

logger = logging.getLogger(__name__)


def session_options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle intra-op threads would spin on the cores the API's event loop and the worker need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def providers(use_gpu: bool | None = None) -> list[str]:
    """CUDA first when asked for (or, with None, when available), the CPU always as the fallback."""
    available = ort.get_available_providers()
    wants_gpu = "CUDAExecutionProvider" in available if use_gpu is None else use_gpu
    return (["CUDAExecutionProvider"] if wants_gpu and "CUDAExecutionProvider" in available else []) + [
        "CPUExecutionProvider"]


class InputBuffers:
    """One flat int64 buffer per token feature; `view(B, T)` hands out zeroed, contiguous (B, T) arrays."""

    def __init__(self, max_batch: int, max_len: int):
        self.capacity = max_batch * max_len
        self.flat = {name: np.zeros(self.capacity, dtype=np.int64) for name in TOKEN_FEATURES}

    def view(self, batch: int, length: int) -> dict[str, np.ndarray]:
        size = batch * length
        if size > self.capacity:  # a larger request than planned: grow once, keep the new size
            self.capacity = size
            self.flat = {name: np.zeros(size, dtype=np.int64) for name in TOKEN_FEATURES}
        arrays = {}
        for name, flat in self.flat.items():
            flat[:size] = 0
            arrays[name] = flat[:size].reshape(batch, length)
        return arrays


class OnnxUserEncoder:
    """Encodes (B, T) token features into (B, d) unit user vectors with `user_encoder.onnx`."""

    def __init__(self, onnx_path: str | Path, model_manifest: dict, threads: int | None = None,
                 use_gpu: bool | None = None, max_batch: int = 256):
        self.manifest = model_manifest  # the export's: model version, dim, max_len
        self.threads = threads or container_cpus()
        self.session = ort.InferenceSession(str(onnx_path), session_options(self.threads),
                                            providers=providers(use_gpu))
        self.max_len = int(self.manifest["max_len"])
        self.dim = int(self.manifest["dim"])
        self.buffers = InputBuffers(max_batch, self.max_len + 1)
        # A session-layout model's graph also gives each history's prefix state (service.query_step reads it).
        self.has_prefix = [output.name for output in self.session.get_outputs()] == ["user_vector", *PREFIX_OUTPUTS]
        logger.info("user encoder %s on %s, %d threads", self.manifest["model_version"],
                    self.session.get_providers()[0], self.threads)

    @property
    def provider(self) -> str:
        """The execution provider onnxruntime actually runs the encoder with (CUDA falls back to the CPU)."""
        return self.session.get_providers()[0]

    @property
    def model_version(self) -> str:
        return str(self.manifest["model_version"])

    def encode(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(["user_vector"], {name: batch[name] for name in TOKEN_FEATURES})[0]

    def encode_with_prefix(self, batch: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(B, d) user vectors and the PREFIX_OUTPUTS of the same call (only when `has_prefix`)."""
        vectors, *prefix = self.session.run(["user_vector", *PREFIX_OUTPUTS],
                                            {name: batch[name] for name in TOKEN_FEATURES})
        return vectors, dict(zip(PREFIX_OUTPUTS, prefix, strict=True))


class OnnxQueryStep:
    """`query_step.onnx`: QUERY_STEP_INPUTS (a request's context token over stored prefix states) -> (B, d) unit
    user vectors, on the encoder's execution provider.

    One thread: a token per block is too little work to split, and on a busy machine a second thread only waits
    to be scheduled (at 2 threads a call took 0.17 ms alone and more under load, against 0.11 ms at one)."""

    def __init__(self, onnx_path: str | Path, use_gpu: bool | None = None):
        self.session = ort.InferenceSession(str(onnx_path), session_options(1), providers=providers(use_gpu))

    def run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run(None, {name: inputs[name] for name in QUERY_STEP_INPUTS})[0]
