"""POST /v1/recall: the handler only orchestrates (plan, encode when needed, answer)."""

from __future__ import annotations

import time
from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Response
from fastapi.concurrency import run_in_threadpool

from service import metrics
from service.deps import ServicesDep, require_api_key, serving_model
from service.models import RecallRequest, RecallResponse
from service.recall import answer, encode_online, plan_recall
from service.serving_model import ServingModel

router = APIRouter()


@router.post("/v1/recall", dependencies=[Depends(require_api_key)], response_model=RecallResponse,
             responses={400: {"description": "the body cannot be decoded at all (FastAPI's parser gives up)"},
                        401: {"description": "X-API-Key missing or wrong"}, 413: {"description": "body too large"},
                        422: {"description": "the body is not JSON, or a field breaks the schema (named in detail)"},
                        503: {"description": "no index loaded yet"}})
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
