"""Bad input is refused with a 4xx naming the field, never a 5xx: schemathesis over the OpenAPI schema (the webhook
calls signed, so the body validation itself is reached), hypothesis properties of the request models, and the
hand-picked cases (huge k, unicode and very long ids, negative or future timestamps, unknown actions)."""

from __future__ import annotations

import json
import time
import uuid

import hypothesis.strategies as st
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from pydantic import ValidationError
from schemathesis import GenerationMode
from schemathesis.core import NotSet
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from service.ingest import normalise, signed_headers
from service.models import MAX_ID_LENGTH, MAX_K, Event, EventBatch, RecallRequest
from service.store.streams import stream_backlog
from tests.support.service import SECRET, LiveService, post_events, service_settings, wait_until

pytestmark = pytest.mark.integration

API_KEY = "fuzz-key"
CHECKS = [schemathesis.checks.not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, negative_data_rejection]


@pytest.fixture(scope="module")
def fuzzed_service(tmp_path_factory, service_artifacts):
    from index_builder.build import build_and_publish

    directory = tmp_path_factory.mktemp("fuzzed")
    build_and_publish(service_artifacts, directory / "index")
    service = LiveService(service_settings(directory, api_key=API_KEY)).start()  # the scheme is fuzzed too
    yield service
    service.stop()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_gets_a_server_error(fuzzed_service, mode):
    """Every operation of /openapi.json, with data that fits its schema and data that breaks it: no 5xx, every
    response as documented, and every schema-breaking request refused with a 4xx."""
    api = schemathesis.openapi.from_url(f"{fuzzed_service.url}/openapi.json")
    operations = [result.ok() for result in api.get_all_operations()]
    assert {operation.path for operation in operations} >= {"/v1/recall", "/v1/events"}
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not any(True for _ in operation.iter_parameters()) \
                and not operation.body:
            continue  # nothing to break

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            send_and_validate(case, fuzzed_service.url)

        check()
    # Whatever the fuzzer got accepted, the worker applied: no poison message stays pending.
    services = fuzzed_service.app.state.services
    wait_until(lambda: stream_backlog(services.client, services.keys) == 0, timeout_s=60)
    with fuzzed_service.client() as client:
        assert client.get("/readyz").status_code == 200


def send_and_validate(case, base_url: str) -> None:
    if case.path == "/v1/events" and not isinstance(case.body, NotSet):
        # Sign what is sent, so generated bodies get past authentication to the validation they are aimed at.
        body = case.body if isinstance(case.body, bytes) else \
            case.body.encode() if isinstance(case.body, str) else json.dumps(case.body).encode()
        response = requests.post(f"{base_url}{case.formatted_path}", data=body, headers=signed_headers(SECRET, body),
                                 timeout=30)
        case.validate_response(response, checks=CHECKS)
    else:
        case.call_and_validate(base_url=base_url, checks=CHECKS, headers={"X-API-Key": API_KEY})


json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=12), children, max_size=4), max_leaves=12)
request_like = st.fixed_dictionaries({}, optional={
    "user_id": json_values, "k": json_values, "context": json_values, "scenario": json_values,
    "filter_viewed": json_values, "exclude_item_ids": json_values, "categories": json_values})
event_like = st.fixed_dictionaries({}, optional={
    "user_id": json_values | st.text(min_size=1), "item_id": json_values | st.integers(), "timestamp": json_values,
    "action": st.sampled_from(["show", "click", "cart", "pay", "buy", ""]) | json_values,
    "context": json_values, "session_id": json_values, "event_id": json_values})


@given(request_like)
@settings(max_examples=300, deadline=None)
def test_a_recall_request_is_either_valid_or_a_validation_error(payload):
    try:
        request = RecallRequest.model_validate_json(json.dumps(payload))
    except ValidationError as error:
        assert all(problem["loc"] for problem in error.errors())  # every problem names its field
        return
    assert 1 <= request.k <= MAX_K and isinstance(request.user_id, int | str)


@given(st.lists(event_like, min_size=1, max_size=3))
@settings(max_examples=300, deadline=None)
def test_an_event_is_either_valid_or_a_validation_error_and_normalises_stably(events):
    try:
        batch = EventBatch.model_validate_json(json.dumps({"events": events}))
    except ValidationError as error:
        assert all(problem["loc"][:1] == ("events",) for problem in error.errors())
        return
    for event in batch.events:
        stored = normalise(event, received_at=time.time())
        assert all(isinstance(stored[name], str) for name in ("user_id", "item_id", "event_id"))
        assert isinstance(stored["timestamp"], int) and stored["timestamp"] >= 0
        # A redelivered copy (same JSON) gets the same idempotency key, so it is deduplicated.
        again = normalise(Event.model_validate_json(event.model_dump_json()), received_at=time.time() + 5)
        assert again["event_id"] == stored["event_id"]


@pytest.mark.parametrize(("request_body", "field"), [
    ({"user_id": 1, "k": 10**9}, "k"),
    ({"user_id": 1, "k": 0}, "k"),
    ({"user_id": "u" * (MAX_ID_LENGTH + 1)}, "user_id"),
    ({"user_id": ""}, "user_id"),
    ({"user_id": 1, "exclude_item_ids": list(range(5000))}, "exclude_item_ids"),
    ({"user_id": 1, "context": ["a"]}, "context"),
    ({"user_id": 1, "surprise": True}, "surprise"),
])
def test_bad_recall_requests_get_422_naming_the_field(fuzzed_service, request_body, field):
    with fuzzed_service.client() as client:
        response = client.post("/v1/recall", json=request_body)
    assert response.status_code == 422
    assert any(field in problem["loc"] for problem in response.json()["detail"])


@pytest.mark.parametrize(("event", "field"), [
    ({"user_id": 1, "item_id": 2, "timestamp": -5}, "timestamp"),
    ({"user_id": 1, "item_id": 2, "timestamp": time.time() + 7 * 86_400}, "timestamp"),
    ({"user_id": 1, "item_id": 2, "action": "purchase"}, "action"),
    ({"user_id": "x" * 10_000, "item_id": 2}, "user_id"),
    ({"user_id": 1, "item_id": None}, "item_id"),
    ({"user_id": 1}, "item_id"),
])
def test_bad_events_get_422_naming_the_field_and_nothing_is_written(fuzzed_service, event, field):
    services = fuzzed_service.app.state.services

    def appended() -> int:  # entries ever added: unlike the length, housekeeping's trims do not lower it
        return sum(services.client.xinfo_stream(stream)["entries-added"] for stream in services.keys.all_streams())

    before = appended()
    with fuzzed_service.client() as client:
        response = post_events(client, [{"user_id": 7, "item_id": 8, "event_id": f"fine-{uuid.uuid4()}"}, event])
    assert response.status_code == 422
    assert any(problem["loc"][:2] == ["events", 1] and field in problem["loc"] for problem in response.json()["detail"])
    assert appended() == before


@pytest.mark.parametrize(("path", "body", "status"), [
    ("/v1/recall", b"[" * 100_000 + b"]" * 100_000, 400),  # nesting deeper than any parser's stack
    ("/v1/recall", b'{"user_id": 1, "context": "' + b"x" * 2_000_000 + b'"}', 413),
    ("/v1/recall", b"\xff\xfe{}", 400),
    ("/v1/events", b"[" * 100_000 + b"]" * 100_000, 422),
])
def test_malformed_or_oversized_bodies_get_a_4xx(fuzzed_service, path, body, status):
    headers = signed_headers(SECRET, body)
    with fuzzed_service.client() as client:
        declared = client.post(path, content=body, headers=headers)
        streamed = client.post(path, content=iter([body[i:i + 65536] for i in range(0, len(body), 65536)]),
                               headers=headers)  # chunked: no Content-Length to refuse it by
    assert declared.status_code == streamed.status_code
    assert declared.status_code == status if status != 400 else 400 <= declared.status_code < 500
    assert declared.json()["detail"]


@pytest.mark.parametrize("body", [b'{"user_id": 1, "k": NaN}', b'{"user_id": NaN}', b'{"user_id": 1, "k": Infinity}',
                                  b'{"user_id": -Infinity}', b'{"user_id": 1, "k": 1e400}',
                                  b'{"user_id": 1, "context": "x", "filter_viewed": NaN}'])
def test_numbers_outside_standard_json_get_a_422_naming_the_field_not_a_500(fuzzed_service, body):
    # Python's JSON parser accepts NaN and Infinity; echoing them back in the error used to fail with a 500
    with fuzzed_service.client() as client:
        response = client.post("/v1/recall", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    named = {problem["loc"][1] for problem in response.json()["detail"]}
    assert named and named <= set(json.loads(body))  # the offending field, not a server error


def test_unicode_ids_are_served_like_any_other(fuzzed_service):
    user, item = "пользователь-😀-ユーザー", "товар-🚲"
    with fuzzed_service.client() as client:
        accepted = post_events(client, [{"user_id": user, "item_id": item, "event_id": f"{user}-1"}])
        assert accepted.status_code == 202 and accepted.json()["accepted"] == 1
        wait_until(lambda: client.post("/v1/recall", json={"user_id": user, "k": 5}).json()["user_vector_age_ms"]
                   is not None)
        answer = client.post("/v1/recall", json={"user_id": user, "k": 5})
    assert answer.status_code == 200 and len(answer.json()["items"]) == 5


ROUTES = ("/v1/recall", "/v1/recall/batch", "/v1/events")
VALID_BODIES = {"/v1/recall": {"user_id": 1, "k": 5, "context": "x", "filter_viewed": True},
                "/v1/recall/batch": {"requests": [{"user_id": 1, "k": 5, "context": "x", "filter_viewed": True}]},
                "/v1/events": {"events": [{"user_id": 1, "item_id": 2, "timestamp": 1_764_000_000,
                                           "action": "click", "context": "x", "session_id": 3}]}}


def fields_of(body: dict, path: tuple = ()):
    """(path, value) of every scalar field in a body."""
    for key, value in body.items():
        if isinstance(value, dict):
            yield from fields_of(value, (*path, key))
        elif isinstance(value, list):
            for n, element in enumerate(value):
                yield from fields_of(element, (*path, key, n))
        else:
            yield (*path, key), value


def with_raw(body: dict, path: tuple, raw: str) -> bytes:
    """The body as JSON text with the field at `path` replaced by `raw` (NaN, Infinity: not expressible in JSON)."""
    marker = "\u0000marker\u0000"
    copy = json.loads(json.dumps(body))
    node = copy
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = marker
    return json.dumps(copy).replace(json.dumps(marker), raw).encode()


def post_raw(client, path: str, body: bytes, content_type: str | None = "application/json"):
    headers = signed_headers(SECRET, body)
    if content_type is None:
        del headers["content-type"]
    else:
        headers["content-type"] = content_type
    return client.post(path, content=body, headers=headers)


@pytest.mark.parametrize("path", ROUTES)
def test_non_finite_numbers_in_every_field_get_a_422_naming_it(fuzzed_service, path):
    with fuzzed_service.client() as client:
        for field, _ in fields_of(VALID_BODIES[path]):
            for raw in ("NaN", "Infinity", "-Infinity", "1e400", "-1e400"):
                response = post_raw(client, path, with_raw(VALID_BODIES[path], field, raw))
                assert response.status_code == 422, (path, field, raw, response.text)
                assert any(names(problem["loc"], field) for problem in response.json()["detail"]), (field, raw)


def names(loc: list, field: tuple) -> bool:
    """`loc` points at `field` (after "body", before a union member's name)."""
    return any(tuple(loc[start:start + len(field)]) == field for start in range(len(loc)))


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(("case", "status"), [("duplicate key", 422), ("nested duplicate key", 422),
                                              ("byte-order mark", 422), ("text/plain", 415),
                                              ("form", 415), ("no content type", 415)])
def test_bodies_outside_standard_json_get_a_4xx_and_change_nothing(fuzzed_service, path, case, status):
    fields = VALID_BODIES[path]
    if path == "/v1/events":  # a new event each time, or the valid copy would be a duplicate of the last case's
        fields = {"events": [{**fields["events"][0], "event_id": str(uuid.uuid4())}]}
    valid = json.dumps(fields).encode()
    body, content_type = {
        "duplicate key": (b'{"k": 5, ' + valid[1:], "application/json"),
        "nested duplicate key": (valid.replace(b'"user_id": 1', b'"user_id": 1, "user_id": 2'), "application/json"),
        "byte-order mark": (b"\xef\xbb\xbf" + valid, "application/json"),
        "text/plain": (valid, "text/plain"),
        "form": (valid, "application/x-www-form-urlencoded"),
        "no content type": (valid, None),
    }[case]
    services = fuzzed_service.app.state.services
    before = sum(services.client.xinfo_stream(stream)["entries-added"] for stream in services.keys.all_streams())
    with fuzzed_service.client() as client:
        response = post_raw(client, path, body, content_type)
        fine = post_raw(client, path, valid)
    assert response.status_code == status, response.text
    assert [set(problem) for problem in response.json()["detail"]] == [{"loc", "msg", "type"}]
    assert fine.status_code in (200, 202)
    after = sum(services.client.xinfo_stream(stream)["entries-added"] for stream in services.keys.all_streams())
    assert after - before == (1 if path == "/v1/events" else 0)  # only the valid copy was appended
