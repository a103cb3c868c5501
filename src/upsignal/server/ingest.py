"""Turn the body of a Segment tracking API request into event rows, or into errors that name field and limit.

Messages are checked and turned into rows by ``events.rows.event_row``, the
same code that file import uses, in its live-ingest mode.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa

from upsignal.errors import InvalidEventError
from upsignal.events.rows import RowContext, event_row, json_type, naive_utc, parse_timestamp
from upsignal.events.schema import MAX_EVENT_BYTES, MESSAGE_TYPES, parse_message
from upsignal.events.writer import rows_to_table

# Segment's tracking API accepts at most 500 KB per batch request and 32 KB per message.
MAX_BATCH_BYTES = 500 * 1024


class IngestError(Exception):
    """A request-level error, sent as the canonical JSON error body with ``status``."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        limit: int | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.limit = limit


@dataclass
class Rejection:
    """One message of a request that was not stored: its index in the batch, field and reason."""

    index: int
    code: str
    message: str
    field: str = ""
    limit: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "code": self.code, "field": self.field, "message": self.message,
                "limit": self.limit}


@dataclass
class PreparedEvents:
    """The rows of a request's valid messages, as an Arrow table, and the rejected ones."""

    table: pa.Table
    rejections: list[Rejection] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return self.table.num_rows


def read_body(raw: bytes, content_encoding: str | None, limit: int) -> bytes:
    """Decompress a gzip body if needed and apply the request size limit to the JSON it carries."""
    encoding = (content_encoding or "identity").strip().lower()
    if encoding == "gzip":
        inflater = zlib.decompressobj(wbits=31)
        try:
            raw = inflater.decompress(raw, limit + 1)
        except zlib.error as error:
            raise IngestError(400, "invalid_gzip", f"the body is not valid gzip data: {error}; send it"
                              " compressed with gzip or drop the Content-Encoding header", field="body") from None
        if not inflater.eof and len(raw) <= limit:
            raise IngestError(400, "invalid_gzip", "the gzip body ends early; send the whole compressed body",
                              field="body")
    elif encoding != "identity":
        raise IngestError(400, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported;"
                          " send the body uncompressed or with gzip", field="Content-Encoding")
    if len(raw) > limit:
        raise IngestError(400, "request_too_large", f"the request body is over the {limit:,}-byte limit;"
                          " send fewer messages per request", field="body", limit=limit)
    return raw


def decode_json(raw: bytes) -> Any:
    """Parse the body as JSON, raising IngestError with the position of the first syntax error."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise IngestError(400, "invalid_json", f"the body is not valid JSON: {error.msg} at line"
                          f" {error.lineno}, column {error.colno} (byte {error.pos})", field="body") from None


def body_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise IngestError(400, "invalid_body", f"the body must be a JSON object, got {json_type(body)}",
                          field="body")
    return body


def batch_messages(body: dict[str, Any]) -> list[Any]:
    """Return the ``batch`` list of a /v1/batch body."""
    messages = body.get("batch")
    if messages is None:
        raise IngestError(400, "invalid_body", "field 'batch' is missing; send {\"batch\": [message, ...]}",
                          field="batch")
    if not isinstance(messages, list):
        raise IngestError(400, "invalid_body", f"field 'batch' must be an array, got {json_type(messages)}",
                          field="batch")
    if not messages:
        raise IngestError(400, "invalid_body", "field 'batch' is empty; send at least one message", field="batch")
    return messages


def single_message(body: dict[str, Any], message_type: str) -> dict[str, Any]:
    """Return the body of a /v1/track-style request as a message of that endpoint's type."""
    given = body.get("type", message_type)
    if given != message_type:
        raise IngestError(400, "invalid_event", f"field 'type' is {given!r} but /v1/{message_type} accepts only"
                          f" {message_type!r} messages; send it to /v1/{given} or /v1/batch"
                          if given in MESSAGE_TYPES else
                          f"field 'type' is {given!r} but /v1/{message_type} accepts only {message_type!r}"
                          " messages", field="type")
    if "type" in body:
        return body
    return {**body, "type": message_type}


def batch_sent_at(body: dict[str, Any]) -> datetime | None:
    """Parse a batch's top-level ``sentAt``, which applies to messages without their own."""
    value = body.get("sentAt")
    if value is None:
        return None
    moment = parse_timestamp(value) if isinstance(value, str) else None
    if moment is None:
        try:
            moment = parse_message({"type": "identify", "userId": "-", "sentAt": value}).sentAt
        except InvalidEventError as error:
            raise IngestError(400, "invalid_body", str(error), field="sentAt") from None
    return naive_utc(moment)


def prepare_events(
    messages: list[Any],
    received_at: datetime,
    future_tolerance: timedelta,
    source: str,
    sent_at: datetime | None = None,
) -> PreparedEvents:
    """Validate messages and build their rows; invalid ones become rejections by index."""
    rows, rejections = [], []
    context = RowContext(received_at, source, future_tolerance, live=True, sent_at=sent_at)
    for index, record in enumerate(messages):
        try:
            size = len(orjson.dumps(record))
            if size > MAX_EVENT_BYTES:
                rejections.append(Rejection(
                    index, "event_too_large", f"the message is {size:,} bytes, over the {MAX_EVENT_BYTES:,}-byte"
                    " limit per message; send large values elsewhere", limit=MAX_EVENT_BYTES))
                continue
            rows.append(event_row(record, context, size))
        except InvalidEventError as error:
            rejections.append(Rejection(index, "invalid_event", str(error), error.field))
    return PreparedEvents(rows_to_table(rows), rejections)
