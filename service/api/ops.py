"""What operators probe: liveness, readiness (Redis, the live model and index, the stream backlog), metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST

from service import metrics
from service.deps import ServicesDep
from service.models import Readiness
from service.store.keys import REDIS_ERRORS
from service.store.streams import stream_backlog

router = APIRouter()
DOCS_ASSETS = "/docs-assets"  # Swagger UI and ReDoc served by the app itself (service.app mounts them), not a CDN


@router.get("/healthz")
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": Readiness}})
def readyz(services: ServicesDep, response: Response) -> Readiness:
    problems, backlog, archive_backlog = [], None, None
    try:
        redis_ok = bool(services.client.ping())
        backlog = stream_backlog(services.client, services.keys)
        if services.settings.archive_dir is not None:
            archive_backlog = stream_backlog(services.client, services.keys, services.keys.archive_group)
    except REDIS_ERRORS as error:
        redis_ok = False
        problems.append(f"redis: {error}")
    model = services.holder.current
    if model is None:
        problems.append(f"index: {services.holder.last_error or 'none published yet'}")
    ready = redis_ok and model is not None
    embedded = services.settings.embedded or services.settings.redis_of_serve
    query_step = model.query_step is not None and services.settings.prefix_ttl_s > 0 if model else None
    response.status_code = 200 if ready else 503
    return Readiness(ready=ready, redis=redis_ok, model_version=model.model_version if model else None,
                     index_version=model.index_version if model else None, embedded=embedded,
                     stream_backlog=backlog, archive_backlog=archive_backlog, refused_index=services.holder.refused,
                     encoder_provider=model.encoder.provider if model else None,
                     faiss_device=("gpu" if model.on_gpu else "cpu") if model else None,
                     query_step=query_step, problems=problems)


@router.get("/metrics", response_class=PlainTextResponse, include_in_schema=False)
def prometheus_metrics() -> Response:
    return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.get("/docs", include_in_schema=False)
def swagger_ui() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="nearline-recall API",
                               swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                               swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                               swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png")


@router.get("/redoc", include_in_schema=False)
def redoc() -> HTMLResponse:
    return get_redoc_html(openapi_url="/openapi.json", title="nearline-recall API",
                          redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                          redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png", with_google_fonts=False)
