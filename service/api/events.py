"""POST /v1/events: the signed webhook. All of a batch is appended, or (on any bad event) none of it."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ValidationError

from service import metrics
from service.api.errors import WEBHOOK_ERRORS, validation_detail
from service.api.strict_json import StrictJSONRoute
from service.deps import ServicesDep, signed_body
from service.ingest import normalise
from service.models import EventBatch, IngestResult
from service.store.keys import REDIS_ERRORS
from service.store.streams import append_events

router = APIRouter(route_class=StrictJSONRoute)


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


@router.post("/v1/events", status_code=202, responses=WEBHOOK_ERRORS, openapi_extra=EVENTS_BODY)
async def ingest_events(services: ServicesDep, body: Annotated[bytes, Depends(signed_body)]) -> IngestResult:
    """Append a signed batch of events to the streams: all of it, or (on any bad event) none of it."""
    settings = services.settings
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
    return IngestResult(accepted=accepted, duplicates=len(events) - accepted)
