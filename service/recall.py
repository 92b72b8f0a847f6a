"""One /v1/recall answer: the request's context -> a query vector -> filtered top-k from the live pair.

Design (DESIGN.md section 2, option a): the worker precomputes each user's vectors for the last and the default
context whenever their history changes. A request for one of those reads the vector (one Redis round trip). A
request for another context is computed from the prefix state the worker stored beside the history (TBGRecall's
session layout): the query-step graph runs the request's one token against it, a second round trip and well
under a millisecond. Without a usable prefix state (expired, another model's, or a model without a query step)
the stored history is encoded in full with the encoder's graph. Every path uses the pair (encoder, index) of one
model version; a vector or prefix state stored by another version, or for another history, is never used.

A request may carry `recent_events`: they are applied to a copy of the stored history, as the worker would apply
them, for this request only; the precomputed vectors no longer describe that history, so it is encoded online.

The steps are separate so the handler can run the one slow step, online encoding, off the event loop, and so a
batch of requests shares one Redis round trip and one encoder call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import orjson

from contract.manifests import FeatureSchema
from contract.prefix_state import PrefixState
from service import metrics
from service.history import apply_event, codes_of, last_context, new_history, viewed_items
from service.ingest import normalise
from service.models import Event, RecallRequest
from service.search import search
from service.serving_model import ServingModel
from service.store.keys import REDIS_ERRORS, Keys, RedisClient
from service.store.user_state import UserState, read_states


@dataclass
class RecallPlan:
    request: RecallRequest
    state: UserState
    context: str | None  # as the model reads it: None is the default
    scenario: str | None
    vector: np.ndarray | None  # the precomputed vector, when there is one for this context
    fallback: str | None
    received_at: float
    history_as_stored: bool  # False when the request's recent events were applied to it
    prefix: PrefixState | None = None  # the stored prefix state of this very history, when it must be computed


def plan_recalls(model: ServingModel, client: RedisClient, keys: Keys,
                 requests: list[RecallRequest]) -> list[RecallPlan]:
    """Read the users' states (one round trip for them all) and pick each precomputed vector that fits."""
    now, fallback = time.time(), None
    # Only a request that names a context or a scenario can miss the precomputed vectors (the others ask for the
    # user's last context), so only theirs need the prefix state: it is read in the same round trip, which costs
    # less than a second one even when the named context turns out to be the last.
    with_prefix = [model.query_step is not None and not request.recent_events
                   and (request.context is not None or request.scenario is not None) for request in requests]
    try:
        states = read_states(client, keys, [str(request.user_id) for request in requests], model.encoder.dim,
                             with_prefix)
    except REDIS_ERRORS:  # degrade to context-only answers rather than fail the requests
        states, fallback = [UserState(history=new_history(), last_id="") for _ in requests], "redis_unavailable"
    plans = [_plan(model, request, state, fallback, now) for request, state in zip(requests, states, strict=True)]
    _attach_prefix_states(model, plans)
    return plans


def _plan(model: ServingModel, request: RecallRequest, stored: UserState, fallback: str | None,
          now: float) -> RecallPlan:
    state = with_recent_events(stored, request, model.schema, now) if request.recent_events else stored
    last_ctx, last_scenario = last_context(state.history)
    context = model.known("contexts", request.context if request.context is not None else last_ctx)
    scenario = model.known("scenarios", request.scenario if request.scenario is not None else last_scenario)
    vector = state.vector_for(context, scenario, model.model_version, model.schema.context_free)
    if vector is None and not state.history["sessions"]:
        fallback = fallback or "cold_user"
    elif vector is None and state.model_version not in (None, model.model_version):
        fallback = "reencoded_stale_vector"
    return RecallPlan(request=request, state=state, context=context, scenario=scenario, vector=vector,
                      fallback=fallback, received_at=now, history_as_stored=state is stored)


def _attach_prefix_states(model: ServingModel, plans: list[RecallPlan]) -> None:
    """The prefix state read with each state, where the plan's vector must be computed and the prefix state
    describes the history read (same model, same newest stream entry)."""
    for plan in plans:
        raw = plan.state.raw_prefix
        if plan.vector is not None or not plan.history_as_stored or not raw:
            continue
        prefix = PrefixState.from_bytes(raw)
        if prefix is not None and prefix.model_version == model.model_version \
                and prefix.last_id == plan.state.last_id:
            plan.prefix = prefix


def with_recent_events(state: UserState, request: RecallRequest, schema: FeatureSchema, now: float) -> UserState:
    """The state with the request's recent events applied to a copy of its history; the stored vectors and
    viewed codes describe the history without them, so they are dropped. Events not after the history's newest
    are already stored (a client may send its last events whether or not the webhook delivered them)."""
    newest = max((session["last"] for session in state.history["sessions"]), default=None)
    history, applied = orjson.loads(orjson.dumps(state.history)), 0
    for recent in request.recent_events:
        event = normalise(Event.model_construct(user_id=request.user_id, **dict(recent)), now)
        if newest is None or event["timestamp"] > newest:
            apply_event(history, event, schema)
            applied += 1
    if not applied:
        return state
    return UserState(history=history, last_id=state.last_id, model_version=state.model_version,
                     updated_ms=state.updated_ms)


def encode_online(model: ServingModel, plans: list[RecallPlan]) -> np.ndarray:
    """(len(plans), d) query vectors of the requests' contexts: one query-step call for the plans with a prefix
    state, one encoder call over the stored histories for the others (a few ms: run those off the loop)."""
    vectors = np.empty((len(plans), model.encoder.dim), dtype=np.float32)
    for rows, compute in (([n for n, plan in enumerate(plans) if plan.prefix is not None], _query_step),
                          ([n for n, plan in enumerate(plans) if plan.prefix is None], _full_encode)):
        if rows:
            vectors[rows] = compute(model, [plans[n] for n in rows])
    return vectors


def _query_step(model: ServingModel, plans: list[RecallPlan]) -> np.ndarray:
    return model.query_vectors([plan.prefix for plan in plans], [plan.context for plan in plans],
                               [plan.scenario for plan in plans], np.array([int(plan.received_at) for plan in plans]))


def _full_encode(model: ServingModel, plans: list[RecallPlan]) -> np.ndarray:
    return model.encode([plan.state.history for plan in plans], [plan.context for plan in plans],
                        [plan.scenario for plan in plans], np.array([int(plan.received_at) for plan in plans]))


def answer(model: ServingModel, plan: RecallPlan, vector: np.ndarray) -> dict:
    """The `RecallResponse` as a plain dict: building 100 pydantic objects per request would cost more than the
    search itself (tests check every answer against the model)."""
    request, state = plan.request, plan.state
    excluded = [codes_of(model.vocabs.items, list(request.exclude_item_ids))]
    if request.filter_viewed:
        fresh_codes = state.viewed_codes is not None and state.model_version == model.model_version
        excluded.append(state.viewed_codes if fresh_codes else codes_of(model.vocabs.items,
                                                                        viewed_items(state.history)))
    codes, scores = search(model, vector, request.k, np.concatenate(excluded).astype(np.int64),
                           allowed_rows(model, request))
    item_ids = model.item_id_of_code[codes].tolist()
    if len(model.fresh):
        item_ids, scores = with_fresh_items(model, plan, vector, item_ids, scores)
    if plan.fallback:
        metrics.FALLBACKS.labels(plan.fallback).inc()
    age_ms = int(plan.received_at * 1000) - state.updated_ms if state.updated_ms else None
    if age_ms is not None:
        metrics.VECTOR_AGE_SECONDS.observe(age_ms / 1000)
    metrics.CANDIDATES_SERVED.inc(len(item_ids))
    if plan.vector is not None:
        source = "precomputed"
    elif plan.prefix is not None:
        source = "query_step"
    else:
        source = "online" if state.history["sessions"] else "cold"
    return {"items": [{"item_id": i, "score": s} for i, s in zip(item_ids, scores.tolist(), strict=True)],
            "model_version": model.model_version, "index_version": model.index_version,
            "user_vector_age_ms": age_ms, "vector_source": source, "fallback": plan.fallback,
            "context_used": plan.context}


def with_fresh_items(model: ServingModel, plan: RecallPlan, vector: np.ndarray, item_ids: list,
                     scores: np.ndarray) -> tuple[list, np.ndarray]:
    """The index's answer merged with the best items added live (service.live_items), under the same filters."""
    request = plan.request
    excluded = {str(item_id) for item_id in request.exclude_item_ids}
    if request.filter_viewed:
        excluded.update(str(item_id) for item_id in viewed_items(plan.state.history))
    categories = None if request.categories is None else np.array(
        [model.small_vocab_codes["categories"].get(str(category), -1) for category in request.categories])
    allowed = None if request.allowed_item_ids is None else {str(item_id) for item_id in request.allowed_item_ids}
    fresh_ids, fresh_scores = model.fresh.top_k(vector, request.k, excluded, categories, allowed)
    merged_scores = np.concatenate([scores, fresh_scores])
    best = np.argsort(-merged_scores, kind="stable")[: request.k]
    merged_ids = [*item_ids, *fresh_ids]
    return [merged_ids[n] for n in best], merged_scores[best]


def allowed_rows(model: ServingModel, request: RecallRequest) -> np.ndarray | None:
    """(n_rows,) bool: the index rows the request's category filter and allow-list leave; None = every row."""
    allowed = None
    if request.categories is not None:
        codes = [model.small_vocab_codes["categories"].get(str(category), -1) for category in request.categories]
        allowed = np.isin(model.category_of_row, np.array(codes, dtype=np.int64))
    if request.allowed_item_ids is not None:
        codes = codes_of(model.vocabs.items, list(request.allowed_item_ids))
        rows = model.row_of_code[codes[(codes > 0) & (codes < len(model.row_of_code))]]
        listed = np.zeros(len(model.category_of_row), dtype=bool)
        listed[rows[rows >= 0]] = True
        allowed = listed if allowed is None else allowed & listed
    return allowed
