"""The Segment tracking endpoints (POST /v1/track, identify, group, alias, page, screen, batch) as bare ASGI.

These endpoints carry all ingest traffic, so they bypass FastAPI's routing and
dependency injection, which cost about 70 microseconds per request on the
2-CPU development machine and would cap single /v1/track calls below 10,000
per second. ``openapi.py`` documents them in the spec that FastAPI serves.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import timedelta
from typing import Any

import orjson

from upsignal.events.schema import MAX_EVENT_BYTES, MESSAGE_TYPES, utc_now
from upsignal.server.errors import error_body
from upsignal.server.ingest import (
    MAX_BATCH_BYTES,
    IngestError,
    check_request,
    read_body,
)
from upsignal.server.writer import GroupCommitWriter, WriterUnavailable

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

TRACKING_PATHS = {f"/v1/{name}": name for name in (*MESSAGE_TYPES, "batch")}
# A gzip body can be slightly larger than what it inflates to; anything beyond this cannot fit the limit.
_COMPRESSED_ALLOWANCE = 4096
_OK_HEADERS = [(b"content-type", b"application/json")]
_AUTH_HEADERS = [(b"content-type", b"application/json"), (b"www-authenticate", b'Basic realm="upsignal"')]


class RejectionLog:
    """Logs rejected requests: one WARNING per endpoint and error code per interval, with the count.

    Only the status, error code and field are logged, never the message text,
    because error messages quote values from the request, emails among them.
    """

    def __init__(self, interval_seconds: float = 10.0):
        self.interval_seconds = interval_seconds
        self.counts: Counter[tuple[str, int, str]] = Counter()
        self.logged_at: dict[tuple[str, int, str], float] = {}

    def record(self, endpoint: str, status: int, code: str, field: str | None) -> None:
        key = (endpoint, status, code)
        self.counts[key] += 1
        now = time.monotonic()
        last = self.logged_at.get(key)
        if last is not None and now - last < self.interval_seconds:
            return
        since = "since start" if last is None else f"in the last {now - last:.0f} s"
        log.warning("rejected %d /v1/%s requests with %d %s (field %s) %s",
                    self.counts[key], endpoint, status, code, field or "-", since)
        self.counts[key] = 0
        self.logged_at[key] = now


class TrackingAPI:
    """Handles the tracking endpoints: parse, authenticate, validate, make durable, then acknowledge."""

    def __init__(self, writer: GroupCommitWriter, key_sources: dict[str, str], future_tolerance: timedelta):
        self.writer = writer
        self.key_sources = key_sources
        self.future_tolerance = future_tolerance
        self.rejections = RejectionLog()

    async def __call__(self, scope: Scope, receive: Receive, send: Send, endpoint: str) -> None:
        status, body, headers = await self._handle(scope, receive, endpoint)
        await send({"type": "http.response.start", "status": status,
                    "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope: Scope, receive: Receive, endpoint: str) -> tuple[int, bytes, list]:
        received_at = utc_now()
        limit = MAX_BATCH_BYTES if endpoint == "batch" else MAX_EVENT_BYTES
        try:
            headers = _headers(scope)
            raw = await _read_request(receive, headers, limit + _COMPRESSED_ALLOWANCE)
            body = read_body(raw, headers.get(b"content-encoding", b"").decode("latin-1"), limit)
            # Errors in the body's JSON are reported before a missing or wrong write key.
            checked = check_request(body, endpoint, received_at, self.future_tolerance)
            source = self._authenticate(headers.get(b"authorization"), checked.write_key)
            entry = checked.entry(body, endpoint, received_at, source, self.future_tolerance)
            await self.writer.write(entry)
        except IngestError as error:
            self.rejections.record(endpoint, error.status, error.code, error.field)
            return (error.status, error_body(error.code, error.message, error.field, error.limit),
                    _AUTH_HEADERS if error.status == 401 else _OK_HEADERS)
        except WriterUnavailable as error:
            return (503, error_body("unavailable", f"{error}; the events were not stored, retry the request"),
                    [*_OK_HEADERS, (b"retry-after", str(error.retry_after).encode())])
        if checked.rejections:
            self.rejections.record(endpoint, 400, "invalid_event", checked.rejections[0].field)
            return 400, _rejection_body(checked.accepted, checked.rejections, endpoint), _OK_HEADERS
        return 200, orjson.dumps({"success": True, "stored": checked.accepted}), _OK_HEADERS

    def _authenticate(self, authorization: bytes | None, key: Any) -> str:
        """Return the source of the request's write key: HTTP Basic user name, else ``writeKey`` in the body."""
        if authorization is not None:
            key = _basic_user(authorization)
        else:
            if key is None:
                raise IngestError(401, "unauthorized", "no write key: send it as the HTTP Basic user name"
                                  " (Authorization: Basic base64('KEY:')) or as 'writeKey' in the body",
                                  field="writeKey")
            if not isinstance(key, str):
                raise IngestError(401, "unauthorized", "field 'writeKey' must be a string", field="writeKey")
        source = self.key_sources.get(hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest())
        if source is None:
            raise IngestError(401, "unauthorized", "the write key is unknown or revoked; create one with"
                              " 'upsignal keys create SOURCE'", field="writeKey")
        return source


def _headers(scope: Scope) -> dict[bytes, bytes]:
    return {name.lower(): value for name, value in scope["headers"]}


async def _read_request(receive: Receive, headers: dict[bytes, bytes], max_bytes: int) -> bytes:
    """Read the whole request body, stopping early once it is certain to be over the limit."""
    declared = headers.get(b"content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise IngestError(400, "request_too_large", f"the request body is {int(declared):,} bytes, over the"
                          f" {max_bytes - _COMPRESSED_ALLOWANCE:,}-byte limit; send fewer messages per request",
                          field="body", limit=max_bytes - _COMPRESSED_ALLOWANCE)
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise IngestError(400, "invalid_body", "the client disconnected before sending the whole body",
                              field="body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise IngestError(400, "request_too_large", f"the request body is over the"
                              f" {max_bytes - _COMPRESSED_ALLOWANCE:,}-byte limit; send fewer messages per request",
                              field="body", limit=max_bytes - _COMPRESSED_ALLOWANCE)
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _basic_user(authorization: bytes) -> str:
    scheme, _, encoded = authorization.partition(b" ")
    if scheme.lower() != b"basic":
        raise IngestError(401, "unauthorized", "the Authorization header must use the Basic scheme with the"
                          " write key as user name: Basic base64('KEY:')", field="Authorization")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise IngestError(401, "unauthorized", "the Authorization header is not valid base64 of 'KEY:'",
                          field="Authorization") from None
    return decoded.partition(":")[0]


def _rejection_body(stored: int, rejections: list, endpoint: str) -> bytes:
    errors = [rejection.to_dict() for rejection in rejections]
    first = rejections[0]
    if endpoint == "batch":
        where = f"batch[{first.index}]" + (f".{first.field}" if first.field else "")
        message = (f"{len(rejections)} of {len(rejections) + stored} messages were rejected and {stored} stored;"
                   f" first at {where}: {first.message}")
    else:
        where, message = first.field or "body", first.message
    return error_body(first.code, message, where, first.limit, stored, errors)
