"""The service end to end: signed webhook -> Redis Streams -> near-line worker -> /v1/recall, on a real
redis-server, real onnxruntime and a real FAISS index, served by uvicorn on loopback."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest

from tests.support.service import SECRET, LiveService, post_events, scaled_out, service_settings, wait_until

pytestmark = pytest.mark.integration


def user_events(small_world, user_id: int, limit: int | None = None) -> list[dict]:
    directory, _ = small_world
    events = pd.read_parquet(directory / "events.parquet")
    rows = events[events.user_id == user_id].head(limit) if limit else events[events.user_id == user_id]
    return [{"event_id": int(r.event_id), "user_id": int(r.user_id), "session_id": int(r.session_id),
             "timestamp": int(r.timestamp), "item_id": int(r.item_id), "action": str(r.action),
             "context": str(r.context), "scenario": str(r.scenario)} for r in rows.itertuples()]


def recall(client, **request) -> dict:
    from service.models import RecallResponse

    response = client.post("/v1/recall", json=request)
    assert response.status_code == 200, response.text
    RecallResponse.model_validate_json(response.content)  # every answer keeps the documented schema
    return response.json()


def wait_for_vectors(client, user_id) -> dict:
    return wait_until(lambda: (answer := recall(client, user_id=user_id, k=10))["vector_source"] == "precomputed"
                      and answer)


def stream_lengths(live_service) -> int:
    services = live_service.app.state.services
    return sum(services.client.xlen(stream) for stream in services.keys.all_streams())


@scaled_out
def test_ingest_then_recall_matches_the_trained_model(live_service, small_world, service_artifacts):
    """The service's answer for a replayed user is what the torch model recommends from the same history."""
    from contract.events import load_events
    from training.recommender import EncoderRecommender
    from training.run_dir import load_run

    directory, _ = small_world
    events = user_events(small_world, user_id=7)
    with live_service.client() as client:
        assert post_events(client, events).json() == {"accepted": len(events), "duplicates": 0}
        answer = wait_for_vectors(client, 7)
        context = events[-1]["context"]
        served = recall(client, user_id=7, context=context, k=10, filter_viewed=False)
    run = load_run(service_artifacts.parent / "run")
    log = load_events(directory / "events.parquet", directory / "items.parquet", vocabs=run.vocabs,
                      grow_vocabs=False)
    log = log.take(log.user == run.vocabs.users.code_of(7))
    vector = EncoderRecommender(run.model, log).user_vectors(
        np.array([run.vocabs.users.code_of(7)]), np.array([run.vocabs.contexts.code_of(context)]),
        np.array([run.vocabs.scenarios.code_of(events[-1]["scenario"])]), np.array([int(time.time())]))[0]
    scores = run.model.item_vectors().detach().numpy() @ vector
    scores[0] = -np.inf
    expected = run.vocabs.items.decode(np.argsort(-scores)[:10]).tolist()
    got = [item["item_id"] for item in served["items"]]
    assert len(set(got) & set(expected)) >= 9, (got, expected)
    assert answer["model_version"] == served["model_version"] and answer["fallback"] is None


def test_the_request_context_drives_the_candidates(live_service, small_world):
    directory, _ = small_world
    items = pd.read_parquet(directory / "items.parquet")
    category_of = dict(zip(items.item_id.tolist(), items.category.astype(str).tolist(), strict=True))
    words = items.category.astype(str).value_counts().index[:2].tolist()
    with live_service.client() as client:
        post_events(client, user_events(small_world, user_id=11))
        wait_for_vectors(client, 11)
        answers = {word: recall(client, user_id=11, context=f"search:{word}", k=20) for word in words}

    def share(word: str, answer: dict) -> float:
        return float(np.mean([category_of[item["item_id"]] == word for item in answer["items"]]))

    first, second = words
    # Searching for a category brings that category up, well above what the other search gives it.
    assert share(first, answers[first]) >= share(first, answers[second]) + 0.2
    assert share(second, answers[second]) >= share(second, answers[first]) + 0.2


def test_filter_viewed_and_exclusions(live_service, small_world):
    """filter_viewed leaves out what the user acted on (clicked, carted, paid), as offline evaluation and `recall
    recommend` do; an item that was only shown stays a candidate."""
    events = user_events(small_world, user_id=21)
    viewed = {event["item_id"] for event in events if event["action"] != "show"}
    shown_only = {event["item_id"] for event in events} - viewed
    with live_service.client() as client:
        post_events(client, events)
        wait_for_vectors(client, 21)
        unfiltered = [i["item_id"] for i in recall(client, user_id=21, k=100, filter_viewed=False)["items"]]
        filtered = recall(client, user_id=21, k=100)["items"]
        excluded = recall(client, user_id=21, k=100, exclude_item_ids=unfiltered[:5], filter_viewed=False)["items"]
    assert viewed & set(unfiltered), "the test needs a user whose own items rank high"
    assert len(filtered) == 100 and not viewed & {item["item_id"] for item in filtered}
    assert shown_only & set(unfiltered[:50]) <= {item["item_id"] for item in filtered}
    assert shown_only & set(unfiltered[:50]), "the test needs a user whose shown items rank high"
    assert not set(unfiltered[:5]) & {item["item_id"] for item in excluded} and len(excluded) == 100


def test_category_filter_returns_only_those_categories(live_service, small_world):
    directory, _ = small_world
    items = pd.read_parquet(directory / "items.parquet")
    category_of = dict(zip(items.item_id.tolist(), items.category.astype(str).tolist(), strict=True))
    wanted = items.category.astype(str).value_counts().index[-1]
    with live_service.client() as client:
        answer = recall(client, user_id=3, k=15, categories=[wanted])
    assert answer["items"] and {category_of[item["item_id"]] for item in answer["items"]} == {wanted}


@scaled_out
def test_duplicate_events_are_not_counted_twice(live_service, small_world):
    from service.store.user_state import read_state

    events = user_events(small_world, user_id=5, limit=40)
    with live_service.client() as client:
        assert post_events(client, events).json() == {"accepted": 40, "duplicates": 0}
        assert post_events(client, events[:10] + events[:10]).json() == {"accepted": 0, "duplicates": 20}
        # Without event ids, the event itself is the key: a redelivered batch is still a no-op.
        anonymous = [{k: v for k, v in event.items() if k != "event_id"} | {"user_id": 99_001} for event in events]
        distinct = len({tuple(sorted(event.items())) for event in anonymous})
        assert post_events(client, anonymous).json() == {"accepted": distinct, "duplicates": 40 - distinct}
        assert post_events(client, anonymous).json() == {"accepted": 0, "duplicates": 40}
        wait_for_vectors(client, 5)
    services = live_service.app.state.services
    state = read_state(services.client, services.keys, "5", services.holder.current.encoder.dim)
    stored = [(session["id"], pair[0]) for session in state.history["sessions"] for pair in session["items"]]
    expected = list(dict.fromkeys((str(e["session_id"]), str(e["item_id"])) for e in events))
    assert sorted(stored) == sorted(expected)


def test_bad_signature_gets_401_and_bad_payload_422_with_nothing_written(live_service, small_world):
    events = user_events(small_world, user_id=9, limit=5)
    with live_service.client() as client:
        assert post_events(client, events, secret="wrong").status_code == 401
        assert post_events(client, events, timestamp=int(time.time()) - 3600).status_code == 401  # a replay
        unsigned = client.post("/v1/events", json={"events": events})
        assert unsigned.status_code == 401 and "header" in unsigned.json()["detail"][0]["msg"]
        bad = [*events[:4], {**events[4], "action": "teleport"}]
        response = post_events(client, bad)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["events", 4, "action"]
        future = post_events(client, [{**events[0], "timestamp": time.time() + 10 * 86_400}])
        assert future.status_code == 422 and future.json()["detail"][0]["loc"] == ["events", 0, "timestamp"]
        assert client.post("/v1/recall", json={"user_id": 9, "k": 5000}).json()["detail"][0]["loc"] == ["body", "k"]
    assert stream_lengths(live_service) == 0


def test_cold_user_and_unknown_context(live_service):
    with live_service.client() as client:
        cold = recall(client, user_id="never-seen", context="no-such-context", k=10)
        default = recall(client, user_id="never-seen", k=10)
    assert cold["fallback"] == "cold_user" and cold["vector_source"] == "cold" and len(cold["items"]) == 10
    assert [i["item_id"] for i in cold["items"]] == [i["item_id"] for i in default["items"]]


class Hammer:
    """Four clients asking for one user's candidates without pause; every (status, index version) is kept."""

    def __init__(self, service: LiveService, user_id: int):
        self.service, self.user_id = service, user_id
        self.statuses: list[tuple[int, str | None]] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.ask) for _ in range(4)]

    def ask(self) -> None:
        with self.service.client() as client:
            while not self.stop.is_set():
                response = client.post("/v1/recall", json={"user_id": self.user_id, "k": 50})
                self.statuses.append((response.status_code, response.json().get("index_version")))

    def __enter__(self) -> Hammer:
        for thread in self.threads:
            thread.start()
        time.sleep(0.5)
        return self

    def wait_for(self, version: str) -> None:
        wait_until(lambda: self.statuses and self.statuses[-1][1] == version, timeout_s=30)
        time.sleep(0.3)

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()


@scaled_out
def test_hot_swap_under_concurrent_requests_serves_every_request(live_service, small_world, tiny_artifacts):
    """Publishing a new index (of another model) while requests run: none fails, and afterwards the answers
    come from the new pair, re-encoding vectors the old model stored."""
    from index_builder.build import build_and_publish

    _, other_artifacts = tiny_artifacts
    with live_service.client() as client:
        post_events(client, user_events(small_world, user_id=13))
        before = wait_for_vectors(client, 13)
    with Hammer(live_service, user_id=13) as hammer:
        report = build_and_publish(other_artifacts, live_service.settings.index_root)
        hammer.wait_for(report.version)
    assert {status for status, _ in hammer.statuses} == {200}
    assert {version for _, version in hammer.statuses} == {before["index_version"], report.version}
    with live_service.client() as client:
        after = recall(client, user_id=13, k=10)
    assert after["model_version"] == report.manifest["model_version"] != before["model_version"]
    assert after["fallback"] in ("reencoded_stale_vector", None)


def test_rollback_serves_the_previous_model_after_its_export_is_gone(tmp_path, service_artifacts, tiny_artifacts,
                                                                      small_world):
    """Two models published from exports that are then deleted (a later export reuses the directory); `recall
    rollback` puts the first back while requests run: none fails, and the first model answers again."""
    import shutil

    from cli.main import main
    from index_builder.build import build_and_publish

    exports = []
    for number, artifacts in enumerate((service_artifacts, tiny_artifacts[1])):
        shutil.copytree(artifacts, tmp_path / f"export-{number}")
        exports.append(build_and_publish(tmp_path / f"export-{number}", tmp_path / "index"))
        shutil.rmtree(tmp_path / f"export-{number}")
    first, second = exports
    service = LiveService(service_settings(tmp_path)).start()
    try:
        with service.client() as client:
            post_events(client, user_events(small_world, user_id=13))
            assert recall(client, user_id=13, k=10)["model_version"] == second.manifest["model_version"]
        with Hammer(service, user_id=13) as hammer:
            assert main(["rollback", "--index", str(tmp_path / "index")]) == 0
            hammer.wait_for(first.version)
        assert {status for status, _ in hammer.statuses} == {200}
        with service.client() as client:
            assert recall(client, user_id=13, k=10)["model_version"] == first.manifest["model_version"]
            assert main(["rollback", "--index", str(tmp_path / "index"), "--to", second.version]) == 0
            wait_until(lambda: recall(client, user_id=13, k=10)["index_version"] == second.version)
    finally:
        service.stop()


def test_health_readiness_metrics_and_api_key(tmp_path, service_artifacts):
    from index_builder.build import build_and_publish
    service = LiveService(service_settings(tmp_path, api_key="k3y")).start()
    try:
        with service.client() as client:
            assert client.get("/healthz").status_code == 200
            not_ready = client.get("/readyz")
            assert not_ready.status_code == 503 and not_ready.json()["redis"] is True
            assert client.post("/v1/recall", json={"user_id": 1}, headers={"X-API-Key": "k3y"}).status_code == 503
            build_and_publish(service_artifacts, tmp_path / "index")
            ready = wait_until(lambda: (r := client.get("/readyz")).status_code == 200 and r.json())
            assert ready["model_version"] and ready["index_version"] and ready["embedded"]
            assert client.post("/v1/recall", json={"user_id": 1}, headers={"X-API-Key": "wrong"}).status_code == 401
            assert httpx.post(f"{service.url}/v1/recall", json={"user_id": 1}).status_code == 401  # no key at all
            assert client.post("/v1/recall", json={"user_id": 1}, headers={"X-API-Key": "k3y"}).status_code == 200
            exposed = client.get("/metrics").text
    finally:
        service.stop()
    for name in ("recall_request_seconds", "recall_candidates_served_total", "stream_backlog_events",
                 "worker_encoder_batch_size", "worker_freshness_seconds"):
        assert name in exposed


def test_webhook_without_a_secret_is_disabled(tmp_path, service_artifacts):
    from index_builder.build import build_and_publish
    build_and_publish(service_artifacts, tmp_path / "index")
    service = LiveService(service_settings(tmp_path, webhook_secret=None)).start()
    try:
        with service.client() as client:
            response = post_events(client, [{"user_id": 1, "item_id": 2}], secret=SECRET)
    finally:
        service.stop()
    assert response.status_code == 503 and "RECALL_WEBHOOK_SECRET" in response.json()["detail"][0]["msg"]


def test_shared_redis_with_auth_serves_api_and_separate_worker_processes(tmp_path, service_artifacts, small_world):
    """REDIS_URL set: the API runs no worker of its own; a `recall worker` process applies the events. The
    password, with characters a URL would need encoded, travels raw in RECALL_REDIS_PASSWORD."""
    import os
    import signal
    import subprocess
    import sys

    from index_builder.build import build_and_publish
    from service.redis_server import EmbeddedRedis
    build_and_publish(service_artifacts, tmp_path / "index")
    password = "p@ss/w:rd#?&=1"
    with EmbeddedRedis(tmp_path / "shared-redis", persistence=False, password=password) as server:
        url = f"unix://{server.socket}"
        settings = service_settings(tmp_path, redis_url=url, redis_password=password)
        env = {**os.environ, "REDIS_URL": url, "RECALL_REDIS_PASSWORD": password,
               "RECALL_INDEX_ROOT": str(settings.index_root), "RECALL_STREAM_PARTITIONS": "4"}
        worker = subprocess.Popen([sys.executable, "-m", "cli.main", "worker", "--metrics-port", "0"], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        service = LiveService(settings).start()
        try:
            with service.client() as client:
                assert client.get("/readyz").json()["embedded"] is False
                post_events(client, user_events(small_world, user_id=17, limit=30))
                answer = wait_for_vectors(client, 17)
            assert answer["fallback"] is None and len(answer["items"]) == 10
        finally:
            service.stop()
            worker.send_signal(signal.SIGTERM)
            worker.wait(timeout=30)
        assert worker.returncode == 0, worker.stderr.read().decode()
        with pytest.raises(RuntimeError, match="did not answer"):
            from service.store.connection import connect_redis

            connect_redis(url, timeout_s=0.5, password="wrong")


def test_backpressure_and_body_limits(tmp_path, service_artifacts, small_world):
    """With the worker stopped, the backlog grows past its limit and the webhook answers 429 with Retry-After;
    a body over the limit gets 413. Neither writes anything."""
    from index_builder.build import build_and_publish
    build_and_publish(service_artifacts, tmp_path / "index")
    settings = service_settings(tmp_path, embedded_worker=False, max_stream_lag=20, max_body_bytes=20_000)
    service = LiveService(settings).start()
    events = user_events(small_world, user_id=19, limit=30)
    try:
        with service.client() as client:
            assert post_events(client, events).json()["accepted"] == 30
            time.sleep(1.1)  # the backlog is measured at most once a second
            refused = post_events(client, events[:5])
            assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
            huge = post_events(client, events * 40)
            assert huge.status_code == 413 and "body" in huge.json()["detail"][0]["msg"]
        assert stream_lengths(service) == 30
    finally:
        service.stop()


def test_rediss_url_connects_over_tls(tmp_path, service_artifacts, small_world):
    """A TLS Redis (rediss:// with a CA bundle): the API gets ready and takes signed events through it."""
    import shutil
    import subprocess

    from index_builder.build import build_and_publish
    from service.server_thread import free_port
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    port = free_port()
    server = subprocess.Popen([shutil.which("redis-server"), "--port", "0", "--tls-port", str(port),
                               "--tls-cert-file", str(cert), "--tls-key-file", str(key), "--tls-ca-cert-file",
                               str(cert), "--tls-auth-clients", "no", "--save", "", "--appendonly", "no",
                               "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    build_and_publish(service_artifacts, tmp_path / "index")
    try:
        url = f"rediss://localhost:{port}/0?ssl_ca_certs={cert}"
        service = LiveService(service_settings(tmp_path, redis_url=url)).start()
        try:
            with service.client() as client:
                assert client.get("/readyz").json()["ready"] is True
                assert post_events(client, user_events(small_world, user_id=23, limit=5)).json()["accepted"] == 5
            assert stream_lengths(service) == 5
        finally:
            service.stop()
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_readiness_names_the_runtime_and_metrics_name_the_live_versions(live_service):
    with live_service.client() as client:
        ready = client.get("/readyz").json()
        assert ready["encoder_provider"] == "CPUExecutionProvider" and ready["faiss_device"] == "cpu"  # no GPU here
        assert ready["query_step"] is True  # a session-layout TBGRecall: new contexts go through the query step
        assert ready["archive_backlog"] is None  # no RECALL_ARCHIVE_DIR
        serving = f'recall_serving_info{{index_version="{ready["index_version"]}",' \
                  f'model_version="{ready["model_version"]}"}} 1.0'
        assert serving in client.get("/metrics").text
