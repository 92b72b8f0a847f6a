"""What handlers depend on, injected by FastAPI: the process's services, the live model, the API key check."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request, Security
from fastapi.security import APIKeyHeader

from service.catalogue import LiveCatalogue
from service.ingest import SIGNATURE_HEADER, TIMESTAMP_HEADER, signature_problem
from service.serving_model import ModelHolder, ServingModel
from service.settings import Settings
from service.store.keys import Keys, RedisClient
from service.store.streams import BacklogMonitor


@dataclass
class Services:
    """What handlers need, built once per process by the lifespan."""

    settings: Settings
    client: RedisClient
    keys: Keys
    holder: ModelHolder
    backlog: BacklogMonitor
    catalogue: LiveCatalogue


async def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


# Dependencies that do no I/O are async: FastAPI runs sync ones in the thread pool, one hop each.
async def serving_model(services: ServicesDep) -> ServingModel:
    model = services.holder.current
    if model is None:
        raise HTTPException(503, detail=f"no index loaded yet: {services.holder.last_error or 'none published'}")
    return model


# Declared through APIKeyHeader so that OpenAPI documents the scheme; the check itself stays ours (a clear 401).
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False,
                              description="required on /v1/recall when RECALL_API_KEY is set")


async def require_api_key(services: ServicesDep,
                          x_api_key: Annotated[str | None, Security(API_KEY_HEADER)] = None) -> None:
    expected = services.settings.api_key
    if expected is not None and not hmac.compare_digest((x_api_key or "").encode("latin-1"),
                                                        expected.get_secret_value().encode()):
        raise HTTPException(401, detail="X-API-Key header missing or wrong")


async def signed_body(services: ServicesDep, request: Request,
                      timestamp: Annotated[str | None, Header(alias=TIMESTAMP_HEADER)] = None,
                      signature: Annotated[str | None, Header(alias=SIGNATURE_HEADER)] = None) -> bytes:
    """The webhook's raw body, once its signature checks out (the signature covers these exact bytes)."""
    settings = services.settings
    if settings.webhook_secret is None:
        raise HTTPException(503, detail="the webhook is disabled: set RECALL_WEBHOOK_SECRET")
    body = await request.body()  # at most RECALL_MAX_BODY_BYTES: service.body_limit refuses more with 413
    problem = signature_problem(settings.webhook_secret.get_secret_value(), timestamp, signature, body,
                                settings.replay_window_s)
    if problem:
        raise HTTPException(401, detail=problem)
    return body
