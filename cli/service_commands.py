"""`recall serve` (the API, plus the worker and a private Redis when embedded) and `recall worker`.

Everything else comes from the environment (service/settings.py): one way to configure both, here and in
docker-compose.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import sys
import threading

from contract.errors import DataError

logger = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="run the HTTP API (embedded Redis and worker without REDIS_URL)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--workers", type=int, default=None,
                       help="API processes (default RECALL_WORKERS: one per CPU); on the embedded default the "
                            "parent process runs redis-server and the near-line worker for them all")
    serve.set_defaults(handler=run_serve)
    worker = commands.add_parser("worker", help="run a near-line worker against REDIS_URL")
    worker.add_argument("--metrics-port", type=int, default=9101, help="Prometheus /metrics port (0: none)")
    worker.set_defaults(handler=run_worker)
    archive = commands.add_parser("archive", help="write accepted events to RECALL_ARCHIVE_DIR (one per deployment "
                                                  "with REDIS_URL; `recall serve` runs it itself when embedded)")
    archive.set_defaults(handler=run_archive)


def settings_or_error():
    from pydantic import ValidationError

    from service.settings import Settings

    try:
        return Settings()
    except ValidationError as error:
        first = error.errors()[0]
        raise DataError("environment", f"{first['msg']}", column=f"RECALL_{str(first['loc'][0]).upper()}") from None


def shared_redis_or_error(settings):
    """A client of the shared Redis once it answers (retrying with backoff for RECALL_REDIS_CONNECT_TIMEOUT_S);
    one clear line and exit code 2 when it never does."""
    from service.store.connection import connect_redis

    try:
        return connect_redis(settings.redis_url, settings.redis_cluster, settings.redis_connect_timeout_s,
                             settings.redis_password_value)
    except RuntimeError as error:
        raise DataError("environment", str(error), column="REDIS_URL") from None


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from index_builder.versions import current_version
    from service.api_processes import UVICORN_APP, bound_socket, serve_processes
    from service.settings import container_cpus

    settings = settings_or_error()
    workers = settings.api_processes(args.workers)
    if workers < 1:
        raise DataError("recall serve", f"--workers must be at least 1, not {workers}", column="--workers")
    logging.getLogger("service").setLevel(logging.INFO)
    if not settings.embedded:
        shared_redis_or_error(settings).close()  # fail before uvicorn starts, with one line instead of a traceback
    if current_version(settings.index_root) is None:  # it starts anyway and swaps one in when it is published
        print(f"recall serve: warning: no index published under {settings.index_root} yet: /v1/recall answers 503 "  # noqa: T201
              f"until `recall publish --index {settings.index_root}` (or `recall build-index --out`) publishes one",
              file=sys.stderr, flush=True)
    if workers == 1:
        uvicorn.run(**UVICORN_APP, host=args.host, port=args.port)
        return 0

    try:  # a clear error here rather than in every API process (or a port shared with another service)
        bound_socket(args.host, args.port, reuse_port=False).close()
    except OSError as error:
        raise DataError("recall serve", f"cannot listen on {args.host}:{args.port}: {error.strerror}",
                        column="--port") from None
    # Set before this process imports prometheus_client: each process, this one's worker included, writes its
    # metrics here, so /metrics on any of them shows them all.
    metrics_dir = settings.data_dir / "prometheus"
    shutil.rmtree(metrics_dir, ignore_errors=True)  # samples of an earlier run's processes are not this one's
    metrics_dir.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    if not settings.encoder_threads:
        # The API processes share the CPUs rather than each taking them all. The embedded worker (this process)
        # keeps them all: it encodes in bursts of events, and its idle threads do not spin (session_options).
        os.environ["RECALL_ENCODER_THREADS"] = str(max(1, container_cpus() // workers))
    if not settings.embedded:
        return serve_processes(args.host, args.port, workers)
    from service.background import embedded_backend

    with embedded_backend(settings) as redis_url:  # the API processes inherit the environment at their start
        os.environ.update({"REDIS_URL": redis_url, "RECALL_REDIS_OF_SERVE": "true"})
        return serve_processes(args.host, args.port, workers)


def run_worker(args: argparse.Namespace) -> int:
    from prometheus_client import start_http_server

    from service.serving_model import ModelHolder
    from service.worker import NearlineWorker

    settings = settings_or_error()
    if settings.embedded:
        raise DataError("environment", "`recall worker` needs a shared Redis: set REDIS_URL (without it, "
                        "`recall serve` runs the worker itself)", column="REDIS_URL")
    logging.getLogger("service").setLevel(logging.INFO)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    if args.metrics_port:
        start_http_server(args.metrics_port)
    client = shared_redis_or_error(settings)
    holder = ModelHolder(settings, with_index=False).start()
    try:
        NearlineWorker(client, settings, holder).run(stop)
    finally:
        holder.stop()
    return 0


def run_archive(args: argparse.Namespace) -> int:
    from service.archive import EventArchiver
    from service.store.keys import Keys

    settings = settings_or_error()
    if settings.embedded:
        raise DataError("environment", "`recall archive` needs a shared Redis: set REDIS_URL (without it, "
                        "`recall serve` archives itself)", column="REDIS_URL")
    if settings.archive_dir is None:
        raise DataError("environment", "set RECALL_ARCHIVE_DIR to the directory to archive into",
                        column="RECALL_ARCHIVE_DIR")
    logging.getLogger("service").setLevel(logging.INFO)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    client = shared_redis_or_error(settings)
    keys = Keys(settings.key_prefix, settings.stream_partitions)
    EventArchiver(client, keys, settings.archive_dir, settings.archive_flush_s).run(stop)
    return 0
