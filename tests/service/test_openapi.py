"""The OpenAPI document integrators generate clients from (read without starting the service: no sockets)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import Settings


def openapi(tmp_path, **settings) -> dict:
    app = create_app(Settings(redis_url=None, data_dir=tmp_path / "var", index_root=tmp_path / "index", **settings))
    return TestClient(app).get("/openapi.json").json()  # no `with`: the lifespan (Redis, model) never starts


def test_operation_ids_are_the_handler_names(tmp_path):
    ids = {operation["operationId"] for path in openapi(tmp_path)["paths"].values() for operation in path.values()}
    assert ids == {"recall_candidates", "ingest_events", "healthz", "readyz", "prometheus_metrics"}


def test_the_api_key_is_a_declared_security_scheme_of_recall_when_one_is_set(tmp_path):
    assert "securitySchemes" not in openapi(tmp_path).get("components", {})  # no key: no request is refused
    document = openapi(tmp_path, api_key="k3y")
    schemes = document["components"]["securitySchemes"]
    assert schemes == {"APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                                        "description": "required on /v1/recall when RECALL_API_KEY is set"}}
    assert document["paths"]["/v1/recall"]["post"]["security"] == [{"APIKeyHeader": []}]


def test_recall_promises_the_errors_it_gives(tmp_path):
    responses = openapi(tmp_path)["paths"]["/v1/recall"]["post"]["responses"]
    # Text that is not JSON gets 422 json_invalid; bytes FastAPI cannot decode get 400 (the fuzzer found both).
    assert "not JSON" in responses["422"]["description"] and "decoded" in responses["400"]["description"]
    assert {"200", "400", "401", "413", "422", "503"} <= set(responses)
