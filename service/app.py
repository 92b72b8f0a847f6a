"""The FastAPI application: its lifespan (Redis, the live model pair, the embedded worker), wiring only.

    uvicorn --factory service.app:create_app      (what `recall serve` runs)
"""

from __future__ import annotations

import importlib.resources
import threading
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
from service.archive import EventArchiver
from service.body_limit import BodySizeLimit
from service.catalogue import LiveCatalogue
from service.deps import Services
from service.metrics import RequestMetrics
from service.redis_server import EmbeddedRedis
from service.serving_model import ModelHolder
from service.settings import Settings, get_settings
from service.store.connection import connect_redis
from service.store.keys import Keys
from service.store.streams import BacklogMonitor, ensure_groups
from service.worker import NearlineWorker


@asynccontextmanager
async def lifespan(app: FastAPI):
    settings: Settings = app.state.settings
    faiss.omp_set_num_threads(settings.search_threads)
    embedded = EmbeddedRedis(settings.data_dir / "redis").start() if settings.embedded else None
    worker_stop, worker_thread, archive_thread = threading.Event(), None, None
    holder = None
    try:
        client = connect_redis(embedded.url if embedded else settings.redis_url, settings.redis_cluster,
                               settings.redis_connect_timeout_s, None if embedded else settings.redis_password_value)
        keys = Keys(settings.key_prefix, settings.stream_partitions)
        ensure_groups(client, keys)
        if settings.archive_dir is not None:  # before the first event is accepted, wherever the archiver runs
            ensure_groups(client, keys, keys.archive_group)
        catalogue = LiveCatalogue(client, keys)
        holder = ModelHolder(settings, sync_items=catalogue.sync).start()
        app.state.services = Services(settings=settings, client=client, keys=keys, holder=holder,
                                      backlog=BacklogMonitor(client, keys), catalogue=catalogue)
        if embedded and settings.embedded_worker:
            worker = NearlineWorker(client, settings, holder)
            worker_thread = threading.Thread(target=worker.run, args=(worker_stop,), name="nearline-worker",
                                             daemon=True)
            worker_thread.start()
        if embedded and settings.archive_dir is not None:
            archiver = EventArchiver(client, keys, settings.archive_dir, settings.archive_flush_s)
            archive_thread = threading.Thread(target=archiver.run, args=(worker_stop,), name="event-archive",
                                              daemon=True)
            archive_thread.start()
        yield
    finally:
        worker_stop.set()
        for thread in (worker_thread, archive_thread):
            if thread is not None:
                thread.join(timeout=10)
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
