"""One /v1/recall answer: the request's context -> a query vector -> filtered top-k from the live pair.

Design (DESIGN.md section 2, option a): the worker precomputes each user's vectors for the last and the default
context whenever their history changes. A request for one of those reads the vector (one Redis round trip); a
request for another context encodes online, with the same ONNX graph, from the history stored beside it. Both
paths use the pair (encoder, index) of one model version; a vector stored by another version is re-encoded.

The steps are separate so the handler can run the one slow step, online encoding, off the event loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from service import metrics
from service.history import codes_of, last_context, new_history, viewed_items
from service.models import RecallRequest
from service.search import search
from service.serving_model import ServingModel
from service.store.keys import REDIS_ERRORS, Keys, RedisClient
from service.store.user_state import UserState, read_state


@dataclass
class RecallPlan:
    request: RecallRequest
    state: UserState
    context: str | None  # as the model reads it: None is the default
    scenario: str | None
    vector: np.ndarray | None  # the precomputed vector, when there is one for this context
    fallback: str | None
    received_at: float


def plan_recall(model: ServingModel, client: RedisClient, keys: Keys, request: RecallRequest) -> RecallPlan:
    """Read the user's state (one round trip) and pick the precomputed vector when it fits the request."""
    now, fallback = time.time(), None
    try:
        state = read_state(client, keys, str(request.user_id), model.encoder.dim)
    except REDIS_ERRORS:  # degrade to a context-only answer rather than fail the request
        state, fallback = UserState(history=new_history(), last_id=""), "redis_unavailable"
    last_ctx, last_scenario = last_context(state.history)
    context = model.known("contexts", request.context if request.context is not None else last_ctx)
    scenario = model.known("scenarios", request.scenario if request.scenario is not None else last_scenario)
    vector = state.vector_for(context, scenario, model.model_version)
    if vector is None and not state.history["sessions"]:
        fallback = fallback or "cold_user"
    elif vector is None and state.model_version not in (None, model.model_version):
        fallback = "reencoded_stale_vector"
    return RecallPlan(request=request, state=state, context=context, scenario=scenario, vector=vector,
                      fallback=fallback, received_at=now)


def encode_online(model: ServingModel, plan: RecallPlan) -> np.ndarray:
    """The query vector from the stored history and the request's context (a few ms: run it off the loop)."""
    return model.encode([plan.state.history], [plan.context], [plan.scenario],
                        np.array([int(plan.received_at)]))[0]


def answer(model: ServingModel, plan: RecallPlan, vector: np.ndarray) -> dict:
    """The `RecallResponse` as a plain dict: building 100 pydantic objects per request would cost more than the
    search itself (tests check every answer against the model)."""
    request, state = plan.request, plan.state
    excluded = [codes_of(model.vocabs.items, list(request.exclude_item_ids))]
    if request.filter_viewed:
        fresh_codes = state.viewed_codes is not None and state.model_version == model.model_version
        excluded.append(state.viewed_codes if fresh_codes else codes_of(model.vocabs.items,
                                                                        viewed_items(state.history)))
    categories = None if request.categories is None else np.array(
        [model.small_vocab_codes["categories"].get(str(c), -1) for c in request.categories], dtype=np.int64)
    codes, scores = search(model, vector, request.k, np.concatenate(excluded).astype(np.int64), categories)
    if plan.fallback:
        metrics.FALLBACKS.labels(plan.fallback).inc()
    age_ms = int(plan.received_at * 1000) - state.updated_ms if state.updated_ms else None
    if age_ms is not None:
        metrics.VECTOR_AGE_SECONDS.observe(age_ms / 1000)
    metrics.CANDIDATES_SERVED.inc(len(codes))
    item_ids = model.item_id_of_code[codes].tolist()
    source = "precomputed" if plan.vector is not None else ("online" if state.history["sessions"] else "cold")
    return {"items": [{"item_id": i, "score": s} for i, s in zip(item_ids, scores.tolist(), strict=True)],
            "model_version": model.model_version, "index_version": model.index_version,
            "user_vector_age_ms": age_ms, "vector_source": source, "fallback": plan.fallback}
