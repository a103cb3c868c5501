"""The one JSON error body of every HTTP endpoint, and the handlers that turn exceptions into it.

Top-level ``code`` and ``message`` are what the Segment SDKs read from an
error response; ``field`` and ``limit`` say where and which limit, ``stored``
how many messages of the request were stored anyway, and ``errors`` lists the
rejected messages of a batch by index.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from upsignal.errors import NotFoundError

log = logging.getLogger(__name__)

# Error messages quote client input; keep them readable when a value is huge.
MAX_MESSAGE_CHARS = 1000


class MessageError(BaseModel):
    """One rejected message of a batch."""

    index: int = Field(description="Position of the message in the request's batch, from 0")
    code: str = Field(description="invalid_event or event_too_large")
    field: str = Field(description="Dotted path of the invalid field in the message, empty for the whole message")
    message: str
    limit: int | None = Field(description="The byte limit that was exceeded, if any")


class ErrorBody(BaseModel):
    """The error body of every endpoint."""

    success: Literal[False] = False
    code: str = Field(description="Machine-readable error code, e.g. invalid_json or unauthorized")
    message: str = Field(description="What was wrong, with the value, and what to do")
    field: str | None = Field(description="The request field or header at fault, if one is")
    limit: int | None = Field(description="The byte limit that was exceeded, if any")
    stored: int = Field(description="Messages of this request that were stored despite the error")
    errors: list[MessageError] = Field(description="Rejected messages of a batch, by index")


def error_body(
    code: str,
    message: str,
    field: str | None = None,
    limit: int | None = None,
    stored: int = 0,
    errors: list[dict[str, Any]] | None = None,
) -> bytes:
    if len(message) > MAX_MESSAGE_CHARS:
        message = message[: MAX_MESSAGE_CHARS - 3] + "..."
    for item in errors or ():
        if len(item["message"]) > MAX_MESSAGE_CHARS:
            item["message"] = item["message"][: MAX_MESSAGE_CHARS - 3] + "..."
        if len(item["field"]) > 200:
            item["field"] = item["field"][:197] + "..."
    return orjson.dumps({
        "success": False, "code": code, "message": message, "field": field, "limit": limit,
        "stored": stored, "errors": errors or [],
    })


def error_response(status: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    return Response(error_body(code, message, field), status_code=status, media_type="application/json",
                    headers=headers)


_HTTP_CODES = {401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}


async def _http_error(request: Request, error: HTTPException) -> Response:
    code = _HTTP_CODES.get(error.status_code, "http_error")
    message = str(error.detail)
    if error.status_code == 404 and message == "Not Found":
        message = f"no endpoint at {request.url.path}; see /docs for the API"
    elif error.status_code == 405:
        message = f"{request.method} is not allowed on {request.url.path}; see /docs for the methods it accepts"
    return error_response(error.status_code, code, message, headers=getattr(error, "headers", None))


async def _validation_error(request: Request, error: RequestValidationError) -> Response:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    value = first.get("input")
    return error_response(400, "invalid_request", f"{where}: {first['msg']} (got {value!r:.80})", field=where)


async def _not_found(request: Request, error: NotFoundError) -> Response:
    return error_response(404, "not_found", str(error))


async def _unexpected(request: Request, error: Exception) -> Response:
    # NOTE: an unexpected failure answers 503 rather than 500, so clients retry; it is logged in full.
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return error_response(503, "internal_error", "the server failed to handle the request; retry later")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(Exception, _unexpected)
