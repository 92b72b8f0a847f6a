"""One request-size limit for every route, enforced while the body arrives (a declared Content-Length beyond it is
refused before a byte is read), so no handler ever holds an oversized body in memory."""

from __future__ import annotations

import orjson
from fastapi import HTTPException

from service.api.errors import problem


class BodySizeLimit:
    """Pure ASGI middleware: 413 with a message naming the limit."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:
                # An HTTPException: FastAPI passes it through its body parsing unchanged, and answers 413.
                raise HTTPException(413, detail=self.message)
            return message

        await self.app(scope, counted_receive, send)

    @property
    def message(self) -> str:
        return f"body: at most {self.limit} bytes"

    async def _refuse(self, send) -> None:
        body = orjson.dumps({"detail": [problem([], self.message, "too_large")]})
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
