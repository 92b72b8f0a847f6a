"""HTTP handlers. They only orchestrate: authentication, validation and the calls into the service modules."""

from __future__ import annotations

import time
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Header, HTTPException, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError

from service import metrics
from service.deps import ServicesDep, require_api_key, serving_model
from service.ingest import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    EventBatch,
    IngestResult,
    normalise,
    signature_problem,
)
from service.keys import REDIS_ERRORS
from service.recall import answer, encode_online, plan_recall
from service.schemas import Readiness, RecallRequest, RecallResponse
from service.serving_model import ServingModel
from service.streams import append_events, stream_backlog

router = APIRouter()


@router.post("/v1/recall", dependencies=[Depends(require_api_key)], response_model=RecallResponse,
             responses={400: {"description": "the body is not JSON"}, 401: {}, 413: {}, 503: {}})
async def recall_candidates(request: RecallRequest, services: ServicesDep,
                            model: Annotated[ServingModel, Depends(serving_model)]) -> Response:
    """Top-k candidates for the user in the request's context. The fast steps (a Redis read of well under a
    millisecond, the FAISS search) run on the event loop: a thread-pool hop would cost more than they do."""
    started = time.perf_counter()
    plan = plan_recall(model, services.client, services.keys, request)
    vector = plan.vector if plan.vector is not None else await run_in_threadpool(encode_online, model, plan)
    body = orjson.dumps(answer(model, plan, vector))
    metrics.REQUEST_SECONDS.labels("recall").observe(time.perf_counter() - started)
    return Response(body, media_type="application/json")


def inline_json_schema(model: type[BaseModel]) -> dict:
    """`model`'s JSON schema with its nested models written in place: OpenAPI resolves `$ref`s from the root of
    the document, where a model's own `$defs` are not."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def resolve(node):
        if isinstance(node, dict):
            if set(node) == {"$ref"}:
                return resolve(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        return [resolve(value) for value in node] if isinstance(node, list) else node

    return resolve(schema)


# The body is read raw (the signature covers its exact bytes), so its schema is declared here for the docs.
EVENTS_BODY = {"requestBody": {"required": True,
                               "content": {"application/json": {"schema": inline_json_schema(EventBatch)}}}}


@router.post("/v1/events", status_code=202, responses={401: {}, 413: {}, 422: {}, 429: {}, 503: {}},
             openapi_extra=EVENTS_BODY)
async def ingest_events(request: Request, services: ServicesDep,
                        timestamp: Annotated[str | None, Header(alias=TIMESTAMP_HEADER)] = None,
                        signature: Annotated[str | None, Header(alias=SIGNATURE_HEADER)] = None) -> IngestResult:
    """Append a signed batch of events to the streams: all of it, or (on any bad event) none of it."""
    started = time.perf_counter()
    settings = services.settings
    if settings.webhook_secret is None:
        raise HTTPException(503, detail="the webhook is disabled: set RECALL_WEBHOOK_SECRET")
    body = await request.body()  # at most RECALL_MAX_BODY_BYTES: service.body_limit refuses more with 413
    problem = signature_problem(settings.webhook_secret.get_secret_value(), timestamp, signature, body,
                                settings.replay_window_s)
    if problem:
        raise HTTPException(401, detail=problem)
    try:
        batch = EventBatch.model_validate_json(body)
    except ValidationError as error:
        metrics.EVENTS_INGESTED.labels("rejected").inc()
        raise HTTPException(422, detail=validation_detail(error.errors())) from None
    if len(batch.events) > settings.max_batch_events:
        raise HTTPException(413, detail=f"events: at most {settings.max_batch_events} per batch, got "
                                        f"{len(batch.events)}")
    backlog = await run_in_threadpool(services.backlog.value)
    if backlog > settings.max_stream_lag:
        raise HTTPException(429, detail=f"the workers are {backlog} events behind; retry later",
                            headers={"Retry-After": "1"})
    received_at = time.time()
    events = [normalise(event, received_at) for event in batch.events]
    try:
        accepted = await run_in_threadpool(append_events, services.client, services.keys, events,
                                           settings.dedupe_ttl_s)
    except REDIS_ERRORS as error:
        raise HTTPException(503, detail=f"the event store is unavailable ({type(error).__name__}); retry",
                            headers={"Retry-After": "1"}) from None
    metrics.EVENTS_INGESTED.labels("accepted").inc(accepted)
    metrics.EVENTS_INGESTED.labels("duplicate").inc(len(events) - accepted)
    metrics.REQUEST_SECONDS.labels("events").observe(time.perf_counter() - started)
    return IngestResult(accepted=accepted, duplicates=len(events) - accepted)


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": Readiness}})
def readyz(services: ServicesDep, response: Response) -> Readiness:
    problems, backlog = [], None
    try:
        redis_ok = bool(services.client.ping())
        backlog = stream_backlog(services.client, services.keys)
    except REDIS_ERRORS as error:
        redis_ok = False
        problems.append(f"redis: {error}")
    model = services.holder.current
    if model is None:
        problems.append(f"index: {services.holder.last_error or 'none published yet'}")
    ready = redis_ok and model is not None
    response.status_code = 200 if ready else 503
    return Readiness(ready=ready, redis=redis_ok, model_version=model.model_version if model else None,
                     index_version=model.index_version if model else None, embedded=services.settings.embedded,
                     stream_backlog=backlog,
                     refused_index=services.holder.refused, problems=problems)


@router.get("/metrics", response_class=PlainTextResponse)
def prometheus_metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def validation_detail(errors: list[dict]) -> list[dict]:
    """FastAPI's 422 detail list without the offending input: echoing it back cannot fail to serialise (a NaN
    or 1e400 in the body is valid Python JSON but not valid response JSON) and leaks nothing."""
    return [{"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]} for error in errors]


async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": validation_detail(error.errors())})
