"""Prometheus metrics of the API and the worker (one registry per process; `/metrics` exposes it)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
FRESHNESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUEST_SECONDS = Histogram("recall_request_seconds", "API request latency", ["endpoint"], buckets=LATENCY_BUCKETS)
CANDIDATES_SERVED = Counter("recall_candidates_served_total", "candidates returned by /v1/recall")
FALLBACKS = Counter("recall_fallbacks_total", "recall answers that were not a fresh precomputed vector",
                    ["reason"])
VECTOR_AGE_SECONDS = Histogram("recall_user_vector_age_seconds", "age of the user vector a recall used",
                               buckets=FRESHNESS_BUCKETS)
EVENTS_INGESTED = Counter("ingest_events_total", "webhook events by outcome", ["outcome"])
STREAM_LAG = Gauge("stream_backlog_events", "events appended but not yet acknowledged by the workers")
ENCODER_BATCH = Histogram("worker_encoder_batch_size", "rows per encoder call",
                          buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
FRESHNESS_SECONDS = Histogram("worker_freshness_seconds", "event appended -> user vector written",
                              buckets=FRESHNESS_BUCKETS)
USERS_ENCODED = Counter("worker_users_encoded_total", "users re-encoded by the near-line worker")
EVENTS_APPLIED = Counter("worker_events_applied_total", "events applied to user histories")
INDEX_SWAPS = Counter("index_swaps_total", "index versions swapped in")
# 1 for the live (model, index) pair, 0 for pairs it replaced: dashboards see what served when.
SERVING = Gauge("recall_serving_info", "the model and index version this process serves", ["model_version",
                                                                                            "index_version"])
