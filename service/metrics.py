"""Prometheus metrics of the API and the worker, and the middleware that times every HTTP request.

One registry per process; with `recall serve --workers N` each process also writes its samples to
PROMETHEUS_MULTIPROC_DIR (set by `recall serve`), and `/metrics` adds them all up, so a scrape of any worker sees
the whole server.
"""

from __future__ import annotations

import os
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
FRESHNESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUEST_SECONDS = Histogram("recall_request_seconds", "HTTP request latency by route template, method and status "
                            "(every status: a refused request is timed too)", ["route", "method", "status"],
                            buckets=LATENCY_BUCKETS)
CANDIDATES_SERVED = Counter("recall_candidates_served_total", "candidates returned by /v1/recall")
FALLBACKS = Counter("recall_fallbacks_total", "recall answers that were not a fresh precomputed vector",
                    ["reason"])
VECTOR_AGE_SECONDS = Histogram("recall_user_vector_age_seconds", "age of the user vector a recall used",
                               buckets=FRESHNESS_BUCKETS)
EVENTS_INGESTED = Counter("ingest_events_total", "webhook events by outcome", ["outcome"])
STREAM_LAG = Gauge("stream_backlog_events", "events appended but not yet acknowledged by the workers",
                   multiprocess_mode="max")
ENCODER_BATCH = Histogram("worker_encoder_batch_size", "rows per encoder call",
                          buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
FRESHNESS_SECONDS = Histogram("worker_freshness_seconds", "event appended -> user vector written",
                              buckets=FRESHNESS_BUCKETS)
USERS_ENCODED = Counter("worker_users_encoded_total", "users re-encoded by the near-line worker")
EVENTS_APPLIED = Counter("worker_events_applied_total", "events applied to user histories")
INDEX_SWAPS = Counter("index_swaps_total", "index versions swapped in")
ITEMS_ADDED = Counter("catalogue_items_added_total", "items added live through POST /v1/items")
# 1 for the live (model, index) pair, 0 for pairs it replaced: dashboards see what served when.
SERVING = Gauge("recall_serving_info", "the model and index version this process serves", ["model_version",
                                                                                            "index_version"],
                multiprocess_mode="max")


def exposition() -> bytes:
    """The text `/metrics` answers: this process's registry, or every process's under PROMETHEUS_MULTIPROC_DIR."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()


class RequestMetrics:
    """Pure ASGI middleware: each request's latency under its route template (not the raw path, which would
    make a label value per user id), its method and the status it was answered with."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 500  # an exception that escapes every handler is a 500

        async def send_and_record(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            REQUEST_SECONDS.labels(route, scope["method"], str(status)).observe(time.perf_counter() - started)
