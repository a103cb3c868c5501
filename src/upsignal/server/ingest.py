"""Turn the body of a Segment tracking API request into event rows, or into errors that name field and limit.

Every message is checked exactly as ``events.schema.parse_message`` and
``event_timestamp`` check it, and becomes the row ``to_row`` builds. Running
the pydantic model and ``to_row`` costs about 14 microseconds per message on
the 2-CPU development machine, which alone would cap ingest near 70,000
events/s on one core. ``_fast_row`` therefore first tries a plain-Python path
(about 2.6 microseconds) that accepts only the common, unambiguous shape:
string ids, ISO 8601 timestamps, and objects for properties, traits and
context. Every other message goes to the full model. A property test checks that both
paths give the same row for any message the fast path accepts.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pyarrow as pa

from upsignal.errors import InvalidEventError
from upsignal.events.schema import (
    MAX_EVENT_BYTES,
    MESSAGE_TYPES,
    deterministic_message_id,
    event_timestamp,
    parse_message,
    to_row,
)
from upsignal.events.writer import rows_to_table

# Segment's tracking API accepts at most 500 KB per batch request and 32 KB per message.
MAX_BATCH_BYTES = 500 * 1024
MAX_ID_LENGTH = 256
# Messages no larger than this cannot hold a string over the model's 8,192-character limit.
_FAST_PATH_MAX_BYTES = 8192
_ISO_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})\Z")
# Fields the server sets itself: a client's receivedAt would switch off clock-skew correction.
_SERVER_FIELDS = ("writeKey", "receivedAt")


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
        raise IngestError(400, "invalid_body", f"the body must be a JSON object, got {_json_type(body)}",
                          field="body")
    return body


def batch_messages(body: dict[str, Any]) -> list[Any]:
    """Return the ``batch`` list of a /v1/batch body."""
    messages = body.get("batch")
    if messages is None:
        raise IngestError(400, "invalid_body", "field 'batch' is missing; send {\"batch\": [message, ...]}",
                          field="batch")
    if not isinstance(messages, list):
        raise IngestError(400, "invalid_body", f"field 'batch' must be an array, got {_json_type(messages)}",
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
    moment = _parse_timestamp(value) if isinstance(value, str) else None
    if moment is None:
        try:
            moment = parse_message({"type": "identify", "userId": "-", "sentAt": value}).sentAt
        except InvalidEventError as error:
            raise IngestError(400, "invalid_body", str(error), field="sentAt") from None
    return _naive_utc(moment)


def prepare_events(
    messages: list[Any],
    received_at: datetime,
    future_tolerance: timedelta,
    source: str,
    sent_at: datetime | None = None,
) -> PreparedEvents:
    """Validate messages and build their rows; invalid ones become rejections by index."""
    rows, rejections = [], []
    context = _Context(received_at, future_tolerance, source, sent_at)
    for index, record in enumerate(messages):
        try:
            size = len(orjson.dumps(record))
            if size > MAX_EVENT_BYTES:
                rejections.append(Rejection(
                    index, "event_too_large", f"the message is {size:,} bytes, over the {MAX_EVENT_BYTES:,}-byte"
                    " limit per message; send large values elsewhere", limit=MAX_EVENT_BYTES))
                continue
            row = _fast_row(record, context) if size <= _FAST_PATH_MAX_BYTES else None
            rows.append(row or _checked_row(record, context))
        except InvalidEventError as error:
            rejections.append(Rejection(index, "invalid_event", str(error), error.field))
    return PreparedEvents(rows_to_table(rows), rejections)


@dataclass
class _Context:
    received_at: datetime
    future_tolerance: timedelta
    source: str
    sent_at: datetime | None


def _checked_row(record: Any, context: _Context) -> tuple[Any, ...]:
    """Build a row through the full pydantic model; raises InvalidEventError naming field and value."""
    if not isinstance(record, dict):
        raise InvalidEventError(f"a message must be a JSON object, got {_json_type(record)}")
    message_record = {key: value for key, value in record.items() if key not in _SERVER_FIELDS}
    message = parse_message(message_record)
    if message.sentAt is None and context.sent_at is not None:
        message.sentAt = context.sent_at
    try:
        if message.timestamp is None and message.originalTimestamp is None:
            timestamp, clamped = context.received_at, False
        else:
            timestamp, clamped = event_timestamp(
                message, context.received_at, context.future_tolerance, clamp_future=True
            )
    except OverflowError:
        raise InvalidEventError(
            "field 'timestamp': the clock-skew correction (receivedAt - (sentAt - timestamp)) is out of the"
            " supported date range; check timestamp and sentAt", field="timestamp",
        ) from None
    message_id = message.messageId or deterministic_message_id(message_record)
    return to_row(message, message_id, timestamp, clamped, context.received_at, context.source)


def _fast_row(record: Any, context: _Context) -> tuple[Any, ...] | None:
    """Build the row of a plain, valid message in plain Python; None hands the message to the model."""
    if type(record) is not dict:
        return None
    get = record.get
    message_type = get("type")
    if message_type not in MESSAGE_TYPES:
        return None
    message_id = get("messageId")
    if type(message_id) is not str or not 0 < len(message_id) <= MAX_ID_LENGTH:
        return None
    user_id, anonymous_id = get("userId"), get("anonymousId")
    group_id, previous_id = get("groupId"), get("previousId")
    for value in (user_id, anonymous_id, group_id, previous_id):
        if value is not None and (type(value) is not str or len(value) > MAX_ID_LENGTH):
            return None
    user_id, anonymous_id = user_id or None, anonymous_id or None
    if user_id is None and anonymous_id is None:
        return None
    event, name = get("event"), get("name")
    if (event is not None and type(event) is not str) or (name is not None and type(name) is not str):
        return None
    if message_type == "track" and not (event and event.strip()):
        return None
    if (message_type == "group" and not group_id) or (message_type == "alias" and not (previous_id and user_id)):
        return None
    properties, traits, message_context = get("properties"), get("traits"), get("context")
    for value in (properties, traits, message_context):
        if value is not None and type(value) is not dict:
            return None
    if get("originalTimestamp") is not None:
        return None
    happened = _parse_timestamp(get("timestamp"))
    if happened is None:
        return None
    sent_text = get("sentAt")
    if sent_text is None:
        sent_at = context.sent_at
    else:
        sent_at = _parse_timestamp(sent_text)
        if sent_at is None:
            return None
    received_at = context.received_at
    try:
        if sent_at is not None:
            happened = received_at - (_naive_utc(sent_at) - happened)
    except OverflowError:
        return None
    clamped = happened > received_at + context.future_tolerance
    if clamped:
        happened = received_at
    if group_id is None and message_context:
        context_group = message_context.get("groupId")
        if isinstance(context_group, (str, int)):
            group_id = str(context_group)
    return (
        message_id, message_type, event, name, user_id, anonymous_id, group_id, previous_id,
        happened, received_at,
        orjson.dumps(properties).decode() if properties else None,
        orjson.dumps(traits).decode() if traits else None,
        orjson.dumps(message_context).decode() if message_context else None,
        context.source, clamped,
    )


def _parse_timestamp(value: Any) -> datetime | None:
    """Parse a strict ISO 8601 UTC-offset timestamp to naive UTC; None for any other form."""
    if type(value) is not str or not _ISO_TIMESTAMP.match(value):
        return None
    try:
        return _naive_utc(datetime.fromisoformat(value))
    except (ValueError, OverflowError):
        return None


def _naive_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
