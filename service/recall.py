"""One /v1/recall answer: the request's context -> a query vector -> filtered top-k from the live pair.

Design (DESIGN.md section 2, option a): the worker precomputes each user's vectors for the last and the default
context whenever their history changes. A request for one of those reads the vector (one Redis round trip); a
request for another context encodes online, with the same ONNX graph, from the history stored beside it. Both
paths use the pair (encoder, index) of one model version; a vector stored by another version is re-encoded.
"""

from __future__ import annotations

import time

import numpy as np
import redis

from service import metrics
from service.history import codes_of, last_context, new_history, viewed_items
from service.keys import Keys
from service.schemas import Candidate, RecallRequest, RecallResponse
from service.search import search
from service.serving_model import ServingModel
from service.user_state import UserState, read_state


def recall(model: ServingModel, client: redis.Redis, keys: Keys, request: RecallRequest) -> RecallResponse:
    now = time.time()
    fallback = None
    try:
        state = read_state(client, keys, str(request.user_id), model.encoder.dim)
    except redis.RedisError:  # degrade to a context-only answer rather than fail the request
        state, fallback = UserState(history=new_history(), last_id=""), "redis_unavailable"
    last_ctx, last_scenario = last_context(state.history)
    context = model.known("contexts", request.context if request.context is not None else last_ctx)
    scenario = model.known("scenarios", request.scenario if request.scenario is not None else last_scenario)
    vector = state.vector_for(context, scenario, model.model_version)
    if vector is not None:
        source = "precomputed"
    else:
        source = "online" if state.history["sessions"] else "cold"
        if source == "cold":
            fallback = fallback or "cold_user"
        elif state.model_version not in (None, model.model_version):
            fallback = "reencoded_stale_vector"
        vector = model.encode([state.history], [context], [scenario], np.array([int(now)]))[0]
    excluded = [codes_of(model.vocabs.items, list(request.exclude_item_ids))]
    if request.filter_viewed:
        fresh_codes = state.viewed_codes is not None and state.model_version == model.model_version
        excluded.append(state.viewed_codes if fresh_codes else codes_of(model.vocabs.items,
                                                                        viewed_items(state.history)))
    categories = None if request.categories is None else np.array(
        [model.small_vocab_codes["categories"].get(str(c), -1) for c in request.categories], dtype=np.int64)
    codes, scores = search(model, vector, request.k, np.concatenate(excluded).astype(np.int64), categories)
    if fallback:
        metrics.FALLBACKS.labels(fallback).inc()
    age_ms = int(now * 1000) - state.updated_ms if state.updated_ms else None
    if age_ms is not None:
        metrics.VECTOR_AGE_SECONDS.observe(age_ms / 1000)
    metrics.CANDIDATES_SERVED.inc(len(codes))
    item_ids = model.item_id_of_code[codes].tolist()
    return RecallResponse(items=[Candidate(item_id=i, score=float(s)) for i, s in zip(item_ids, scores, strict=True)],
                          model_version=model.model_version, index_version=model.index_version,
                          user_vector_age_ms=age_ms, vector_source=source, fallback=fallback)
