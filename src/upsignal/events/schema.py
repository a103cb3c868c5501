"""The Segment message spec as pydantic models, and the row each message becomes.

Only the fields upsignal reads are declared; any other top-level field is kept
by pydantic (``extra="allow"``) and dropped when the row is built.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import orjson
import pydantic
from pydantic import BaseModel, ConfigDict, Field, SkipValidation, model_validator

from upsignal.errors import InvalidEventError, shown_value

# Segment's HTTP tracking API rejects events over 32 KB.
MAX_EVENT_BYTES = 32 * 1024
MESSAGE_TYPES = ("track", "identify", "group", "alias", "page", "screen")
DEFAULT_FUTURE_TOLERANCE = timedelta(hours=1)

Id = str | None


class Message(BaseModel):
    """One Segment message of any type; per-type requirements are checked after parsing."""

    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True, str_max_length=8192)

    type: Literal["track", "identify", "group", "alias", "page", "screen"]
    messageId: Id = Field(default=None, min_length=1, max_length=256)
    userId: Id = Field(default=None, max_length=256)
    anonymousId: Id = Field(default=None, max_length=256)
    event: Id = None
    name: Id = None
    groupId: Id = Field(default=None, max_length=256)
    previousId: Id = Field(default=None, max_length=256)
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None
    sentAt: datetime | None = None
    receivedAt: datetime | None = None
    # Checked in _check_type_requirements instead of by pydantic, which would copy
    # every nested dict: a third of the validation time of a typical event.
    properties: SkipValidation[dict[str, Any] | None] = None
    traits: SkipValidation[dict[str, Any] | None] = None
    context: SkipValidation[dict[str, Any] | None] = None

    @model_validator(mode="after")
    def _check_type_requirements(self) -> Message:
        for name in ("properties", "traits", "context"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, dict):
                raise InvalidEventError(
                    f"field '{name}': must be a JSON object, got {type(value).__name__} {shown_value(value, 60)}",
                    field=name,
                    value=value,
                )
        if self.userId == "":
            self.userId = None
        if self.anonymousId == "":
            self.anonymousId = None
        if self.userId is None and self.anonymousId is None:
            raise ValueError("userId or anonymousId is required")
        if self.type == "track" and not (self.event and self.event.strip()):
            raise ValueError("event is required for track messages")
        if self.type == "group" and not self.groupId:
            raise ValueError("groupId is required for group messages")
        if self.type == "alias" and not (self.previousId and self.userId):
            raise ValueError("previousId and userId are required for alias messages")
        return self


def _as_utc(moment: datetime) -> datetime:
    """Naive datetimes are taken as UTC; aware ones are converted. Returns naive UTC."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def deterministic_message_id(record: dict[str, Any]) -> str:
    """Derive a messageId from a record's content, so re-importing it dedupes."""
    digest = hashlib.sha256(json_bytes(record, sort_keys=True)).hexdigest()
    return "content-" + digest[:32]


def _describe_validation_error(error: pydantic.ValidationError) -> InvalidEventError:
    first = error.errors(include_url=False)[0]
    field = ".".join(str(part) for part in first["loc"])
    value = first.get("input")
    if field:
        message = f"field '{field}': {first['msg']} (got {shown_value(value)})"
    else:
        message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        message = f"field '{field}' is missing"
    return InvalidEventError(message, field=field, value=value)


def parse_message(record: Any) -> Message:
    """Validate one decoded JSON record, raising InvalidEventError naming field and value."""
    if not isinstance(record, dict):
        raise InvalidEventError(
            f"a message must be a JSON object, got {type(record).__name__}", value=record
        )
    try:
        return Message.model_validate(record)
    except pydantic.ValidationError as error:
        raise _describe_validation_error(error) from None


def event_timestamp(
    message: Message,
    received_at: datetime,
    future_tolerance: timedelta = DEFAULT_FUTURE_TOLERANCE,
    live: bool = False,
) -> tuple[datetime, bool]:
    """Return the message's UTC timestamp, corrected for client clock skew, and whether it was clamped.

    The device clock's offset is removed, ``timestamp = receivedAt - (sentAt -
    timestamp)``, only when the time the message reached a collector is known.
    In live ingest (``live``) that time is ``received_at``, the request time.
    In a file, it is the record's own ``receivedAt`` (a Segment export). Such a
    record that also has ``timestamp`` was corrected by Segment, so its
    ``timestamp`` is kept. A file record without ``receivedAt`` keeps its
    ``timestamp`` (else ``originalTimestamp``) as is, because the import time
    is unrelated to when it was sent. A result beyond ``received_at +
    future_tolerance`` is clamped to ``received_at`` in live ingest and
    rejected in a file.
    """
    received_at = _as_utc(received_at)
    happened = message.timestamp or message.originalTimestamp
    if happened is None:
        raise InvalidEventError("field 'timestamp' is missing", field="timestamp")
    happened = _as_utc(happened)
    if live:
        collected_at = received_at
    elif message.timestamp is None and message.receivedAt is not None:
        collected_at = _as_utc(message.receivedAt)
    else:
        collected_at = None
    if message.sentAt is not None and collected_at is not None:
        happened = collected_at - (_as_utc(message.sentAt) - happened)
    if happened > received_at + future_tolerance:
        if live:
            return received_at, True
        raise InvalidEventError(
            f"field 'timestamp': {happened.isoformat()}Z is in the future"
            f" (more than {future_tolerance} after {received_at.isoformat()}Z)",
            field="timestamp",
            value=happened.isoformat(),
        )
    return happened, False


def json_bytes(value: Any, sort_keys: bool = False) -> bytes:
    """Serialise a decoded JSON value compactly, with orjson where it can.

    orjson cannot write integers beyond 64 bits (msgspec decodes them) or nesting
    deeper than 254 levels (orjson.loads reads 1,024), so such values are written
    by ``_json_bytes_without_recursion``.
    """
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except orjson.JSONEncodeError:
        return _json_bytes_without_recursion(value, sort_keys)


class _Literal(bytes):
    """Punctuation or a key that ``_json_bytes_without_recursion`` writes as it is."""


def _json_bytes_without_recursion(value: Any, sort_keys: bool) -> bytes:
    """Serialise a value of any depth with a stack of its own, so no depth hits Python's recursion limit."""
    parts: list[bytes] = []
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if type(item) is _Literal:
            parts.append(item)
        elif isinstance(item, dict):
            keys = sorted(item, key=str) if sort_keys else list(item)
            parts.append(b"{")
            pending.append(_Literal(b"}"))
            # Pushed last to first, so that the first key comes off the stack first.
            for position in range(len(keys) - 1, -1, -1):
                key = keys[position]
                pending.append(item[key])
                pending.append(_Literal((b"," if position else b"") + orjson.dumps(str(key)) + b":"))
        elif isinstance(item, (list, tuple)):
            parts.append(b"[")
            pending.append(_Literal(b"]"))
            for position in range(len(item) - 1, -1, -1):
                pending.append(item[position])
                if position:
                    pending.append(_Literal(b","))
        elif isinstance(item, int) and not isinstance(item, bool):
            parts.append(str(item).encode())
        else:
            parts.append(orjson.dumps(item, default=str))
    return b"".join(parts)


def json_text(value: dict[str, Any] | None) -> str | None:
    """Return the stored text of a properties, traits or context object; None for an absent or empty one."""
    return json_bytes(value).decode() if value else None


def to_row(
    message: Message,
    message_id: str,
    timestamp: datetime,
    clamped: bool,
    received_at: datetime,
    source: str | None,
) -> tuple[Any, ...]:
    """Build the events-table row for a validated message (column order of EVENT_COLUMNS)."""
    context = message.context or {}
    group_id = message.groupId
    if group_id is None and isinstance(context.get("groupId"), (str, int)):
        group_id = str(context["groupId"])
    return (
        message_id,
        message.type,
        message.event,
        message.name,
        message.userId,
        message.anonymousId,
        group_id,
        message.previousId,
        timestamp,
        _as_utc(received_at),
        json_text(message.properties),
        json_text(message.traits),
        json_text(message.context),
        source,
        clamped,
    )


EVENT_COLUMNS = (
    "message_id",
    "type",
    "event",
    "name",
    "user_id",
    "anonymous_id",
    "group_id",
    "previous_id",
    "timestamp",
    "received_at",
    "properties",
    "traits",
    "context",
    "source",
    "timestamp_clamped",
)


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)
