"""POST /v1/recall and /v1/recall/batch: the handlers only orchestrate (plan, encode when needed, answer)."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError

from service.api.errors import ERROR_RESPONSES
from service.api.strict_json import StrictJSONRoute
from service.deps import ServicesDep, require_api_key, serving_model
from service.models import RecallBatchRequest, RecallBatchResponse, RecallRequest, RecallResponse
from service.recall import RecallPlan, answer, encode_online, plan_recalls
from service.serving_model import ServingModel

router = APIRouter(dependencies=[Depends(require_api_key)], responses=ERROR_RESPONSES, route_class=StrictJSONRoute)
ModelDep = Annotated[ServingModel, Depends(serving_model)]


@router.post("/v1/recall", response_model=RecallResponse)
async def recall_candidates(request: RecallRequest, services: ServicesDep, model: ModelDep) -> Response:
    """Top-k candidates for the user in the request's context. The fast steps (Redis reads of well under a
    millisecond, a query step over a stored prefix state, the FAISS search) run on the event loop: a thread-pool
    hop would cost more than they do. Only a full encode of the history goes to the pool."""
    [plan] = plan_recalls(model, services.client, services.keys, [request])
    if plan.vector is not None:
        vector = plan.vector
    elif plan.prefix is not None:
        vector = encode_online(model, [plan])[0]
    else:
        vector = (await run_in_threadpool(encode_online, model, [plan]))[0]
    return Response(orjson.dumps(answer(model, plan, vector)), media_type="application/json")


@router.post("/v1/recall/batch", response_model=RecallBatchResponse)
async def recall_candidates_batch(batch: RecallBatchRequest, services: ServicesDep, model: ModelDep) -> Response:
    """One answer per request, in order, each equal to its single call's: the users' states come in one Redis
    round trip and the online encodes in one encoder call. Many searches would hold the event loop, so the
    encode and the searches run in the thread pool."""
    if len(batch.requests) > services.settings.max_batch_requests:
        raise RequestValidationError([{"loc": ("body", "requests"), "type": "too_long",
                                       "msg": f"at most {services.settings.max_batch_requests} requests "
                                              "(RECALL_MAX_BATCH_REQUESTS)"}])
    plans = plan_recalls(model, services.client, services.keys, batch.requests)
    results = await run_in_threadpool(_answer_all, model, plans)
    return Response(orjson.dumps({"results": results}), media_type="application/json")


def _answer_all(model: ServingModel, plans: list[RecallPlan]) -> list[dict]:
    online = [plan for plan in plans if plan.vector is None]
    encoded = iter(encode_online(model, online)) if online else iter(())
    return [answer(model, plan, plan.vector if plan.vector is not None else next(encoded)) for plan in plans]
