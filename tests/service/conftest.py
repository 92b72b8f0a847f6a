"""A live service for integration tests: a real redis-server, real onnxruntime and FAISS, uvicorn on loopback.

`live_service` is the embedded default (a private redis-server and the worker in the API process). Tests of what
scaling out changes (events spread over partitions and workers, deduplication across slots, the hot swap in every
process) also run scaled out, with `@scaled_out`: a 3-node Redis Cluster with 3 workers sharing the partitions."""

from __future__ import annotations

import uuid

import pytest

from tests.support.service import LiveService, WorkerThreads, service_settings


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """One 3-node Redis Cluster for the session; each test keeps to its own key prefix."""
    from tests.support.redis_cluster import LocalRedisCluster

    with LocalRedisCluster(tmp_path_factory.mktemp("redis-cluster"), nodes=3) as cluster:
        yield cluster


@pytest.fixture
def live_service(request, tmp_path, service_artifacts):
    """The service over a freshly published index: embedded, or (`@scaled_out`) against the Redis Cluster with 3
    workers."""
    from index_builder.build import build_and_publish

    build_and_publish(service_artifacts, tmp_path / "index")
    if getattr(request, "param", "embedded") == "embedded":
        service = LiveService(service_settings(tmp_path)).start()
        yield service
        service.stop()
        return
    cluster = request.getfixturevalue("redis_cluster")
    settings = service_settings(tmp_path, redis_url=cluster.url, redis_cluster=True,
                                key_prefix=f"t{uuid.uuid4().hex[:8]}")
    workers = WorkerThreads(settings, count=3)
    service = LiveService(settings).start()
    yield service
    service.stop()
    workers.stop()
