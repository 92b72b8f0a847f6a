"""The prefix state: what TBGRecall's query step reads of a user's history, as the near-line worker stores it.

The encoder graph of a session-layout model has, beside `user_vector`, the outputs of PREFIX_OUTPUTS; the
query-step graph takes QUERY_STEP_INPUTS (training/query_step.py has the model side). One user's state is one
binary value: a JSON header, then keys and values (L, H, n, Dh) as float16, the n distance buckets as int8 and
the previous session's mean item input (d,) as float32. float16 halves the memory against float32, and the
export's parity check holds the vectors it gives to cosine >= 0.9999 of the full encoder's.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import orjson

from contract.tokens import time_features

QUERY_FEATURES = ("context", "scenario", "hour", "weekday", "gap", "session_pos")  # the query token's, (B,) int64
PREFIX_OUTPUTS = ("prefix_keys", "prefix_values", "prefix_buckets", "prefix_previous")
QUERY_STEP_INPUTS = (*QUERY_FEATURES, "keys", "values", "buckets", "key_mask", "previous")
FORMAT = 1
_HEADER_SIZE = struct.Struct("<I")


@dataclass
class PrefixState:
    model_version: str  # the model whose encoder computed it: another model's is never used
    last_id: str  # the newest stream entry of the history it describes: an older or newer history's is never used
    previous_start: int  # the history's last session start (unix s): the query token's gap feature
    session_pos: int  # the query token's session index in the history's window
    keys: np.ndarray  # (L, H, n, Dh) float16, after session-wise RoPE
    values: np.ndarray  # (L, H, n, Dh) float16
    buckets: np.ndarray  # (n,) int8: each history token's session-distance bucket from the query token
    previous: np.ndarray  # (d,) float32

    @property
    def n_tokens(self) -> int:
        return self.keys.shape[2]

    def to_bytes(self) -> bytes:
        header = orjson.dumps({"format": FORMAT, "model_version": self.model_version, "last_id": self.last_id,
                               "previous_start": self.previous_start, "session_pos": self.session_pos,
                               "shape": list(self.keys.shape), "dim": len(self.previous)})
        return b"".join((_HEADER_SIZE.pack(len(header)), header, self.keys.astype(np.float16).tobytes(),
                         self.values.astype(np.float16).tobytes(), self.buckets.astype(np.int8).tobytes(),
                         self.previous.astype(np.float32).tobytes()))

    @classmethod
    def from_bytes(cls, raw: bytes) -> PrefixState | None:
        """The state, or None when `raw` is not one this code wrote (another format, truncated): the caller
        then encodes the history in full."""
        try:
            (size,) = _HEADER_SIZE.unpack_from(raw)
            header = orjson.loads(raw[_HEADER_SIZE.size:_HEADER_SIZE.size + size])
            if header["format"] != FORMAT:
                return None
            shape, dim = tuple(header["shape"]), header["dim"]
            count, offset = int(np.prod(shape)), _HEADER_SIZE.size + size
            if len(raw) != offset + 4 * count + shape[2] + 4 * dim:
                return None
            keys = np.frombuffer(raw, np.float16, count, offset).reshape(shape)
            values = np.frombuffer(raw, np.float16, count, offset + 2 * count).reshape(shape)
            buckets = np.frombuffer(raw, np.int8, shape[2], offset + 4 * count)
            previous = np.frombuffer(raw, np.float32, dim, offset + 4 * count + shape[2])
            return cls(model_version=header["model_version"], last_id=header["last_id"],
                       previous_start=header["previous_start"], session_pos=header["session_pos"], keys=keys,
                       values=values, buckets=buckets, previous=previous)
        except (struct.error, ValueError, KeyError, TypeError):
            return None


def prefix_states(batch: dict[str, np.ndarray], outputs: dict[str, np.ndarray], rows: list[int],
                  previous_starts: list[int], model_version: str, last_ids: list[str]) -> list[PrefixState]:
    """The prefix state of each of `rows` from one encoder call: batch is its (B, T) left-padded input, outputs
    its PREFIX_OUTPUTS; the history is every token of a row but the last (the query token)."""
    states = []
    width = batch["token_type"].shape[1]
    for row, previous_start, last_id in zip(rows, previous_starts, last_ids, strict=True):
        n = int(np.count_nonzero(batch["token_type"][row])) - 1
        history = slice(width - 1 - n, width - 1)
        states.append(PrefixState(
            model_version=model_version, last_id=last_id, previous_start=previous_start,
            session_pos=int(batch["session_pos"][row, -1]),
            keys=outputs["prefix_keys"][row, :, :, history].astype(np.float16),
            values=outputs["prefix_values"][row, :, :, history].astype(np.float16),
            buckets=outputs["prefix_buckets"][row, history].astype(np.int8),
            previous=np.ascontiguousarray(outputs["prefix_previous"][row], dtype=np.float32)))
    return states


def query_step_inputs(states: list[PrefixState], context: np.ndarray, scenario: np.ndarray,
                      request_time: np.ndarray, has_time: bool) -> dict[str, np.ndarray]:
    """The query-step graph's inputs for requests over stored prefixes: context and scenario codes (B,), the
    requests' unix times (B,). One state goes in as it is stored (no copy); several are padded to the longest."""
    hour, weekday, gap = time_features(np.asarray(request_time, dtype=np.int64),
                                       np.array([state.previous_start for state in states], dtype=np.int64),
                                       has_time)
    if len(states) == 1:
        [state] = states
        keys, values = state.keys[None], state.values[None]
        buckets, key_mask = state.buckets[None].astype(np.int64), np.ones((1, state.n_tokens), np.float32)
    else:
        n = max(state.n_tokens for state in states)
        layers, heads, _, head_dim = states[0].keys.shape
        keys = np.zeros((len(states), layers, heads, n, head_dim), np.float16)
        values, buckets = np.zeros_like(keys), np.zeros((len(states), n), np.int64)
        key_mask = np.zeros((len(states), n), np.float32)
        for row, state in enumerate(states):
            keys[row, :, :, :state.n_tokens], values[row, :, :, :state.n_tokens] = state.keys, state.values
            buckets[row, :state.n_tokens], key_mask[row, :state.n_tokens] = state.buckets, 1.0
    return {"context": np.asarray(context, np.int64), "scenario": np.asarray(scenario, np.int64), "hour": hour,
            "weekday": weekday, "gap": gap,
            "session_pos": np.array([state.session_pos for state in states], dtype=np.int64),
            "keys": keys, "values": values, "buckets": buckets, "key_mask": key_mask,
            "previous": np.stack([state.previous for state in states])}
