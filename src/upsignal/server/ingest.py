"""Turn the body of a Segment tracking API request into event rows, or into errors that name field and limit.

Messages are checked and turned into rows by ``events.rows.event_row``, the
same code that file import uses, in its live-ingest mode.
"""

from __future__ import annotations

import dataclasses
import logging
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import msgspec
import orjson
import pyarrow as pa

from upsignal.errors import InvalidEventError, shown_value
from upsignal.events.rows import RowContext, event_row, json_type, naive_utc, parse_timestamp
from upsignal.events.schema import MAX_EVENT_BYTES, MESSAGE_TYPES, json_bytes, parse_message
from upsignal.events.writer import rows_to_table
from upsignal.server.accept import accept, decode_messages

log = logging.getLogger(__name__)

# Segment's tracking API accepts at most 500 KB per batch request and 32 KB per message.
MAX_BATCH_BYTES = 500 * 1024
_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)


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
        raw = _gunzip(raw, limit)
    elif encoding != "identity":
        raise IngestError(400, "unsupported_encoding", f"Content-Encoding {encoding!r} is not supported;"
                          " send the body uncompressed or with gzip", field="Content-Encoding")
    if len(raw) > limit:
        raise IngestError(400, "request_too_large", f"the request body is over the {limit:,}-byte limit;"
                          " send fewer messages per request", field="body", limit=limit)
    return raw


def _gunzip(compressed: bytes, limit: int) -> bytes:
    """Inflate every gzip member of a body (RFC 1952 allows several), stopping once past ``limit`` bytes."""
    parts, size, rest = [], 0, compressed
    while True:
        inflater = zlib.decompressobj(wbits=31)
        try:
            part = inflater.decompress(rest, limit + 1 - size)
        except zlib.error as error:
            where = "" if not parts else f" after {len(compressed) - len(rest):,} bytes of whole gzip members"
            raise IngestError(400, "invalid_gzip", f"the body is not valid gzip data{where}: {error}; send it"
                              " compressed with gzip or drop the Content-Encoding header", field="body") from None
        parts.append(part)
        size += len(part)
        if size > limit:
            break
        if not inflater.eof:
            raise IngestError(400, "invalid_gzip", "the gzip body ends early; send the whole compressed body",
                              field="body")
        rest = inflater.unused_data
        if not rest:
            break
    return b"".join(parts)


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
        raise IngestError(400, "invalid_event", f"field 'type' is {shown_value(given)} but /v1/{message_type}"
                          f" accepts only {message_type!r} messages; send it to /v1/{given} or /v1/batch"
                          if given in MESSAGE_TYPES else
                          f"field 'type' is {shown_value(given)} but /v1/{message_type} accepts only {message_type!r}"
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
    try:
        return naive_utc(moment)
    except OverflowError:
        raise IngestError(400, "invalid_body", f"field 'sentAt': {shown_value(value)} is out of the supported date range"
                          " once converted to UTC; send a time between the years 1 and 9999", field="sentAt") from None


@dataclass
class CheckedRequest:
    """A validated request: its ``writeKey`` field, valid message count and rejected messages."""

    write_key: Any
    accepted: int
    rejections: list[Rejection]
    whole: bool = False

    def entry(self, body: bytes, endpoint: str, received_at: datetime, source: str,
              future_tolerance: timedelta) -> RequestEntry:
        """Return the request's ingest log entry, once its write key has given its ``source``."""
        return RequestEntry(body, endpoint, (received_at - _EPOCH) // _MICROSECOND, source,
                            future_tolerance // _MICROSECOND, self.whole, self.accepted,
                            len(self.rejections))


def check_request(body: bytes, endpoint: str, received_at: datetime, future_tolerance: timedelta) -> CheckedRequest:
    """Validate a request body (decompressed) for a tracking endpoint; raise IngestError if it is no request.

    ``accept`` settles the common request in C. Any other is parsed with orjson
    and goes through the row builder message by message, which finds every
    invalid message and reports why.
    """
    whole = accept(body, endpoint)
    if whole is not None:
        return CheckedRequest(whole.write_key, whole.messages, [], whole=True)
    parsed = body_object(decode_json(body))
    rows, rejections = _check_messages(parsed, endpoint, RowContext(received_at, None, future_tolerance, live=True))
    return CheckedRequest(parsed.get("writeKey"), len(rows), rejections)


def request_messages(body: dict[str, Any], endpoint: str) -> tuple[list[Any], datetime | None]:
    """Return the messages of a parsed request body and the batch ``sentAt`` that applies to them."""
    if endpoint == "batch":
        return batch_messages(body), batch_sent_at(body)
    return [single_message(body, endpoint)], None


def prepare_events(
    messages: list[Any],
    received_at: datetime,
    future_tolerance: timedelta,
    source: str,
    sent_at: datetime | None = None,
) -> PreparedEvents:
    """Validate messages and build their rows; invalid ones become rejections by index."""
    context = RowContext(received_at, source, future_tolerance, live=True, sent_at=sent_at)
    rows, rejections = _build_rows(messages, context, measure=True)
    return PreparedEvents(rows_to_table(rows), rejections)


class RequestEntry(msgspec.Struct, array_like=True, frozen=True):
    """One acknowledged request as the ingest log keeps it: what building its rows again takes.

    ``accepted_whole`` is true when ``accept.accept`` passed every message.
    Otherwise the loader checks the body message by message again. That rejects
    the same ``rejected`` messages, because row building depends only on what
    the entry contains.
    """

    body: bytes
    endpoint: str
    received_at_us: int
    source: str
    future_tolerance_us: int
    accepted_whole: bool
    accepted: int
    rejected: int

    @property
    def context(self) -> RowContext:
        return RowContext(_EPOCH + timedelta(microseconds=self.received_at_us), self.source,
                          timedelta(microseconds=self.future_tolerance_us), live=True)


def entry_rows(entry: RequestEntry) -> tuple[list[tuple[Any, ...]], int]:
    """Build the rows of a logged request; return them and the number of messages rejected."""
    context = entry.context
    built = _accepted_rows(entry, context) if entry.accepted_whole else None
    if built is None:
        try:
            built = _check_messages(body_object(decode_json(entry.body)), entry.endpoint, context)
        except IngestError as error:
            built = [], [Rejection(0, error.code, error.message, error.field or "")]
    rows, rejections = built
    if len(rows) != entry.accepted:
        # Not expected, because the server decided with the same code. Logged, so no event is lost unnoticed.
        log.error("ingest log entry from %s received at %s: %d messages valid on load, %d when acknowledged;"
                  " first rejection: %s", entry.source, context.received_at, len(rows), entry.accepted,
                  rejections[0].message if rejections else "-")
    return rows, len(rejections)


def _accepted_rows(entry: RequestEntry, context: RowContext) -> tuple[list[tuple], list[Rejection]] | None:
    """Build the rows of a request that accept() passed whole; None hands it to the full check.

    orjson parses faster than msgspec decodes into structs and dicts, and gives
    the values the full check gives. It rejects a few bodies that accept()
    passed: those with a byte that is not UTF-8, or a number out of range, in a
    field upsignal ignores. Those are decoded as accept() decoded them.
    """
    try:
        parsed = decode_json(entry.body)
    except IngestError:
        try:
            messages, sent_text = decode_messages(entry.body, entry.endpoint)
        except (msgspec.DecodeError, RecursionError) as error:
            log.error("ingest log entry from %s received at %s no longer passes the check that accepted it: %s",
                      entry.source, context.received_at, error)
            return None
        sent_at = None if sent_text is None else parse_timestamp(sent_text)
        if sent_text is not None and sent_at is None:
            log.error("ingest log entry from %s received at %s: batch sentAt %r no longer parses",
                      entry.source, context.received_at, sent_text)
            return None
    else:
        try:
            messages, sent_at = request_messages(body_object(parsed), entry.endpoint)
        except IngestError:
            return None
    return _build_rows(messages, dataclasses.replace(context, sent_at=sent_at), measure=False)


def _check_messages(body: dict[str, Any], endpoint: str, context: RowContext) -> tuple[list[tuple], list[Rejection]]:
    """Check a parsed request body message by message, as the server does when accept() hands it on."""
    messages, sent_at = request_messages(body, endpoint)
    return _build_rows(messages, dataclasses.replace(context, sent_at=sent_at), measure=True)


def _build_rows(messages: list[Any], context: RowContext, measure: bool) -> tuple[list[tuple], list[Rejection]]:
    """Build the rows of valid messages and a Rejection for each other; ``measure`` applies the size limit."""
    rows, rejections = [], []
    for index, record in enumerate(messages):
        try:
            size = len(json_bytes(record)) if measure else 0
            if size > MAX_EVENT_BYTES:
                rejections.append(Rejection(
                    index, "event_too_large", f"the message is {size:,} bytes, over the {MAX_EVENT_BYTES:,}-byte"
                    " limit per message; send large values elsewhere", limit=MAX_EVENT_BYTES))
                continue
            rows.append(event_row(record, context, size))
        except InvalidEventError as error:
            rejections.append(Rejection(index, "invalid_event", str(error), error.field))
        except RecursionError:  # not expected: error messages and serialisation avoid recursion on values
            log.error("checking message %d of a request from %s ran out of stack", index, context.source)
            rejections.append(Rejection(index, "invalid_event", "the message nests values too deeply to check;"
                                        " send values nested at most a few hundred levels deep"))
    return rows, rejections
