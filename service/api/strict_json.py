"""JSON bodies held to RFC 8259, before any handler or dependency reads them.

Python's parser is lenient where a client's mistake should be loud: it takes a byte-order mark, lets a duplicate
key silently replace the first (`{"events": [...], "events": []}` would swap a batch), and a missing or wrong
Content-Type. Numbers outside standard JSON (NaN, Infinity, 1e400) parse, and the request models refuse them
naming the field, so they are left to the models.
"""

from __future__ import annotations

import json

from fastapi import HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

from service.api.errors import problem

BYTE_ORDER_MARKS = (b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")


class DuplicateKey(ValueError):
    pass


def _refuse_duplicates(pairs: list[tuple[str, object]]) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise DuplicateKey(next(key for n, key in enumerate(keys) if key in keys[:n]))
    return dict(pairs)


def is_json_content_type(value: str | None) -> bool:
    media_type = (value or "").split(";")[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and
                                                 media_type.endswith("+json"))


def check_json_body(content_type: str | None, body: bytes) -> None:
    """HTTPException 415 or RequestValidationError 422 when the body is not strict JSON; None when it is, or when
    it is broken in a way the route's own parser reports (bad syntax, nesting too deep)."""
    if not is_json_content_type(content_type):
        raise HTTPException(415, detail="send the body as Content-Type: application/json")
    if body.startswith(BYTE_ORDER_MARKS):
        raise RequestValidationError([problem(["body"], "a byte-order mark is not allowed in JSON (RFC 8259)",
                                              "json_invalid")])
    try:
        json.loads(body, object_pairs_hook=_refuse_duplicates)
    except DuplicateKey as duplicate:
        raise RequestValidationError([problem(["body", str(duplicate)], f"key {str(duplicate)!r} appears more "
                                              "than once in one object", "json_duplicate_key")]) from None
    except (ValueError, RecursionError):
        pass


class StrictJSONRoute(APIRoute):
    """A route whose POST bodies pass `check_json_body` first (FastAPI's documented way to wrap a route)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            if request.method == "POST":
                check_json_body(request.headers.get("content-type"), await request.body())
            return await handler(request)

        return strict_handler
