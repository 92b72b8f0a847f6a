"""The FastAPI application: its lifespan (Redis, the live model pair, the embedded worker), wiring only.

    uvicorn --factory service.app:create_app      (what `recall serve` runs)
"""

from __future__ import annotations

import importlib.resources
from contextlib import asynccontextmanager

import faiss
from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from contract import __version__
from service.api import events, items, ops, recall
from service.api.errors import http_error, validation_error
from service.background import BackgroundJobs, prepare_streams
from service.body_limit import BodySizeLimit
from service.catalogue import LiveCatalogue
from service.deps import Services
from service.metrics import RequestMetrics
from service.redis_server import EmbeddedRedis
from service.serving_model import ModelHolder
from service.settings import Settings, get_settings
from service.store.connection import connect_redis
from service.store.keys import Keys
from service.store.streams import BacklogMonitor


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings: Settings = app.state.settings
    faiss.omp_set_num_threads(settings.search_threads)
    # Embedded with one API process: the private Redis, the worker and the archiver run here. With several, the
    # parent `recall serve` runs them (service.background) and gives each process its Redis in REDIS_URL.
    embedded = EmbeddedRedis(settings.data_dir / "redis").start() if settings.embedded else None
    jobs, holder = None, None
    try:
        client = connect_redis(embedded.url if embedded else settings.redis_url, settings.redis_cluster,
                               settings.redis_connect_timeout_s, None if embedded else settings.redis_password_value)
        keys = Keys(settings.key_prefix, settings.stream_partitions)
        prepare_streams(client, keys, settings)
        catalogue = LiveCatalogue(client, keys)
        holder = ModelHolder(settings, sync_items=catalogue.sync).start()
        app.state.services = Services(settings=settings, client=client, keys=keys, holder=holder,
                                      backlog=BacklogMonitor(client, keys), catalogue=catalogue)
        if embedded:
            jobs = BackgroundJobs(client, keys, settings, holder).start()
        yield
    finally:
        if jobs is not None:
            jobs.stop()
        if holder is not None:
            holder.stop()
        if embedded is not None:
            embedded.stop()


def create_app(settings: Settings | None = None) -> FastAPI:
    # operationIds are the handlers' names (recall_candidates, not recall_candidates_v1_recall_post): client
    # generators turn them into method names.
    app = FastAPI(title="nearline-recall", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  generate_unique_id_function=lambda route: route.name,
                  description="Near-line generative candidate generation: /v1/recall, the /v1/events webhook, "
                              "/v1/items for items added live, health, readiness and Prometheus metrics.")
    app.state.settings = settings or get_settings()
    app.add_middleware(BodySizeLimit, limit=app.state.settings.max_body_bytes)
    app.add_middleware(RequestMetrics)  # outermost: it sees every answer, a 413 from the body limit included
    for api in (recall, events, items, ops):
        app.include_router(api.router)
    app.mount(ops.DOCS_ASSETS, StaticFiles(directory=importlib.resources.files("fastapi_offline") / "static"),
              name="docs-assets")
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.openapi = lambda: deployment_openapi(app)
    return app


def deployment_openapi(app: FastAPI) -> dict:
    """The OpenAPI document of this deployment: /v1/recall declares the X-API-Key scheme only when
    RECALL_API_KEY is set, since only then is a request without it refused."""
    if app.openapi_schema is None:
        document = get_openapi(title=app.title, version=app.version, description=app.description,
                               routes=app.routes)
        if app.state.settings.api_key is None:
            for operations in document["paths"].values():
                for operation in operations.values():
                    operation.pop("security", None)
            document.get("components", {}).pop("securitySchemes", None)
        app.openapi_schema = document
    return app.openapi_schema
