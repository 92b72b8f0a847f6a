"""One error shape for every 4xx and 5xx: FastAPI's `detail` list, `{"detail": [{"loc", "msg", "type"}]}`.

A validation error names the field in `loc`; other errors have an empty `loc` and a `type` per status, so a
client handles every error with one parser. The input is never echoed back: echoing cannot fail to serialise (a
NaN or 1e400 in the body is valid Python JSON but not valid response JSON) and leaks nothing.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

ERROR_TYPES = {400: "body_unreadable", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed",
               413: "too_large", 415: "unsupported_media_type", 429: "backlog", 503: "unavailable"}


class Problem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    detail: list[Problem]


def _declared(description: str) -> dict:
    return {"model": ErrorBody, "description": description}


# What the /v1 routes answer besides their success, declared in OpenAPI as they are sent.
ERROR_RESPONSES = {
    400: _declared("the body cannot be decoded at all (nesting deeper than a parser's stack, an integer of more "
                   "than 4,300 digits)"),
    401: _declared("credentials missing or wrong (X-API-Key, or the webhook's signature)"),
    413: _declared("the body or the batch is over its limit"),
    415: _declared("the body is not sent as Content-Type: application/json"),
    422: _declared("the body is not JSON (json_invalid: bad syntax, a byte-order mark; json_duplicate_key), or a "
                   "field breaks the schema (named in loc)"),
    503: _declared("not ready: no index loaded yet, or the event store is unavailable (retry after Retry-After)"),
}
WEBHOOK_ERRORS = {**ERROR_RESPONSES, 429: _declared("the workers are behind: retry after Retry-After")}


def problem(loc: list, msg: str, type_: str) -> dict:
    return {"loc": list(loc), "msg": msg, "type": type_}


def validation_detail(errors: list[dict]) -> list[dict]:
    return [problem(error["loc"], error["msg"], error["type"]) for error in errors]


async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": validation_detail(error.errors())})


async def http_error(request: Request, error: HTTPException) -> JSONResponse:
    detail = error.detail if isinstance(error.detail, list) else \
        [problem([], str(error.detail), ERROR_TYPES.get(error.status_code, "error"))]
    return JSONResponse(status_code=error.status_code, content={"detail": detail}, headers=error.headers)
