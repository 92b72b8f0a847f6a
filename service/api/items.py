"""POST /v1/items: new items, signed like the webhook, retrievable from the next request. All or nothing."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError

from service.api.errors import WEBHOOK_ERRORS, validation_detail
from service.api.events import inline_json_schema
from service.api.strict_json import StrictJSONRoute
from service.catalogue import CannotEmbed
from service.deps import ServicesDep, serving_model, signed_body
from service.models import ItemBatch, ItemsResult
from service.serving_model import ServingModel
from service.store.keys import REDIS_ERRORS

router = APIRouter(route_class=StrictJSONRoute)
ITEMS_BODY = {"requestBody": {"required": True,
                              "content": {"application/json": {"schema": inline_json_schema(ItemBatch)}}}}


@router.post("/v1/items", responses={**WEBHOOK_ERRORS, 409: {"description": "the live model cannot embed items"}},
             openapi_extra=ITEMS_BODY)
async def add_items(services: ServicesDep, model: Annotated[ServingModel, Depends(serving_model)],
                    body: Annotated[bytes, Depends(signed_body)]) -> ItemsResult:
    """Embed a signed batch of items from their content (the items-file shape) and add them to the live
    catalogue: every item, or (on any bad one) none. Items the catalogue has already are left as they are."""
    try:
        batch = ItemBatch.model_validate_json(body)
    except ValidationError as error:
        raise HTTPException(422, detail=validation_detail(error.errors())) from None
    rows = [item.model_dump(exclude_none=True) for item in batch.items]
    try:
        added, known = await run_in_threadpool(services.catalogue.add, model, rows)
    except CannotEmbed as error:
        raise HTTPException(409, detail=str(error)) from None
    except REDIS_ERRORS as error:
        raise HTTPException(503, detail=f"the catalogue store is unavailable ({type(error).__name__}); retry",
                            headers={"Retry-After": "1"}) from None
    return ItemsResult(added=added, known=known)
