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
    assert ids == {"recall_candidates", "recall_candidates_batch", "ingest_events", "add_items", "healthz", "readyz"}


def test_the_api_key_is_a_declared_security_scheme_of_recall_when_one_is_set(tmp_path):
    assert "securitySchemes" not in openapi(tmp_path).get("components", {})  # no key: no request is refused
    document = openapi(tmp_path, api_key="k3y")
    schemes = document["components"]["securitySchemes"]
    assert schemes == {"APIKeyHeader": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                                        "description": "required on /v1/recall when RECALL_API_KEY is set"}}
    assert document["paths"]["/v1/recall"]["post"]["security"] == [{"APIKeyHeader": []}]


def test_every_route_promises_the_errors_it_gives_in_one_shape(tmp_path):
    document = openapi(tmp_path)
    paths = document["paths"]
    for path, statuses in (("/v1/recall", {"400", "401", "413", "415", "422", "503"}),
                           ("/v1/recall/batch", {"400", "401", "413", "415", "422", "503"}),
                           ("/v1/events", {"400", "401", "413", "415", "422", "429", "503"})):
        responses = paths[path]["post"]["responses"]
        assert statuses <= set(responses), path
        for status in statuses:  # FastAPI's detail list, for every error
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema["$ref"].rsplit("/", 1)[-1] in ("ErrorBody", "HTTPValidationError"), (path, status)
    # Text that is not JSON gets 422 json_invalid; bytes FastAPI cannot decode get 400 (the fuzzer found both).
    assert "not JSON" in paths["/v1/recall"]["post"]["responses"]["422"]["description"]
    assert "/metrics" not in paths


def test_every_request_model_carries_an_example(tmp_path):
    document = openapi(tmp_path)
    schemas = document["components"]["schemas"]
    for name in ("RecallRequest", "RecallBatchRequest", "RecentEvent"):
        assert schemas[name].get("examples"), name
    events_body = document["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert events_body["examples"] and events_body["properties"]["events"]["items"]["examples"]


def test_the_docs_pages_load_nothing_from_outside(tmp_path):
    """Swagger UI and ReDoc work on an air-gapped machine: every script, style and icon comes from the app."""
    import re

    app = create_app(Settings(redis_url=None, data_dir=tmp_path / "var", index_root=tmp_path / "index"))
    client = TestClient(app)
    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
        assert assets and all(asset.startswith("/") for asset in assets), (page, assets)
        for asset in assets:
            assert client.get(asset).status_code == 200, asset
