"""One 422 shape for every endpoint: FastAPI's detail list, without the input."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


def validation_detail(errors: list[dict]) -> list[dict]:
    """FastAPI's 422 detail list without the offending input: echoing it back cannot fail to serialise (a NaN
    or 1e400 in the body is valid Python JSON but not valid response JSON) and leaks nothing."""
    return [{"loc": list(error["loc"]), "msg": error["msg"], "type": error["type"]} for error in errors]


async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    return JSONResponse(status_code=422, content={"detail": validation_detail(error.errors())})
