"""The quality gate of `recall publish`: a candidate must score within a tolerance of the live version on the
same recent events, through the files each one serves with (its ONNX user encoder and its FAISS index).

The protocol is `recall train`'s validation protocol: with timestamps, the sessions after the last tenth of the
time span are the targets (temporal); without, each user's last event (leave-one-out). Each version reads the
events through its own vocabularies (ids it never saw are unknown to it) and ranks its whole index with the
user's viewed items filtered, as /v1/recall does.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import onnxruntime as ort

from contract.errors import DataError
from contract.events import load_events
from contract.manifests import FeatureSchema
from contract.tokens import (
    TOKEN_FEATURES,
    build_tokens,
    clip_to_model,
    collate,
    history_windows,
    query_tokens,
    session_table,
)
from contract.vocab import Vocabularies
from evaluation.metrics import summarize
from evaluation.splits import leave_one_out, sample_cases, temporal_split, viewed_items

GATE_K = 10
MAX_CASES = 10_000
ENCODE_BATCH = 256


class GateRefused(RuntimeError):
    """The candidate scores below (1 - tolerance) x the live version: it is not published."""


@dataclass
class ServedFiles:
    """What one version answers with: the encoder and vocabularies under `directory`, the export's manifest,
    and the index with each row's item code."""

    directory: Path
    model: dict
    index: faiss.Index
    id_map: np.ndarray

    @classmethod
    def of_export(cls, artifacts: Path, index: faiss.Index, id_map: np.ndarray) -> ServedFiles:
        return cls(artifacts, json.loads((artifacts / "manifest.json").read_text()), index, id_map)


def gate_ndcg(files: ServedFiles, events: Path) -> tuple[float, int]:
    """(NDCG@10, cases) of one version on the events."""
    schema = FeatureSchema.model_validate(files.model["feature_schema"])
    vocabs = Vocabularies.load(files.directory / "vocabularies.json")
    log = load_events(events, session_gap_s=schema.session_gap_s, vocabs=vocabs)
    if schema.event_sessions:
        log = log.event_sessions()
    split = temporal_split(log) if log.has_timestamp else leave_one_out(log)
    split = sample_cases(split, MAX_CASES)
    cases = split.cases
    if len(cases) == 0:
        raise DataError(str(events), "no user has a session to predict after earlier events (the gate needs users "
                        "with two sessions or more in these events: give it a longer window)")
    table = session_table(split.train, schema.max_items_per_session)
    tokens = build_tokens(table, with_context=schema.with_context_tokens)
    encoder = ort.InferenceSession(str(files.directory / "user_encoder.onnx"), providers=["CPUExecutionProvider"])
    sizes = files.model["vocab_sizes"]
    viewed_offsets, viewed = viewed_items(split.train, cases.user)
    recommended = np.zeros((len(cases), GATE_K), dtype=np.int64)
    for start in range(0, len(cases), ENCODE_BATCH):
        rows = np.arange(start, min(start + ENCODE_BATCH, len(cases)))
        windows = history_windows(table, tokens, cases.user[rows], schema.max_len)
        query = query_tokens(table, windows, cases.context[rows], cases.scenario[rows], cases.request_time[rows])
        batch = clip_to_model(collate(tokens, windows, query), sizes)
        user_vectors = encoder.run(None, {name: batch[name] for name in TOKEN_FEATURES})[0]
        most_viewed = int(np.diff(viewed_offsets[rows[0]:rows[-1] + 2]).max(initial=0))
        _, found = files.index.search(np.ascontiguousarray(user_vectors, dtype=np.float32),
                                      min(GATE_K + most_viewed, files.index.ntotal))
        for local, row in enumerate(rows):
            seen = viewed[viewed_offsets[row]:viewed_offsets[row + 1]]
            codes = files.id_map[found[local][found[local] >= 0]]
            codes = codes[~np.isin(codes, seen)][:GATE_K]
            recommended[row, :len(codes)] = codes
    return summarize(recommended, cases, [GATE_K], len(vocabs.items))[f"ndcg@{GATE_K}"], len(cases)


def run_gate(candidate: ServedFiles, live: ServedFiles | None, events: Path, tolerance: float) -> dict:
    """The gate's figures; `GateRefused` (naming both) when the candidate is worse than the tolerance allows.
    With no live version there is nothing to compare with, and the gate passes."""
    candidate_ndcg, cases = gate_ndcg(candidate, events)
    figures = {"events": str(events), "cases": cases, "metric": f"ndcg@{GATE_K}", "tolerance": tolerance,
               "candidate": round(candidate_ndcg, 6), "live": None, "live_model_version": None, "passed": True}
    if live is not None:
        live_ndcg, _ = gate_ndcg(live, events)
        figures.update(live=round(live_ndcg, 6), live_model_version=live.model["model_version"],
                       passed=candidate_ndcg >= (1 - tolerance) * live_ndcg)
        if not figures["passed"]:
            raise GateRefused(f"candidate {candidate.model['model_version']} NDCG@{GATE_K} {candidate_ndcg:.4f} < "
                              f"(1 - {tolerance}) x live {live.model['model_version']} {live_ndcg:.4f} on {cases:,} "
                              f"cases of {events}: not published")
    return figures
