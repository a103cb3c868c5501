"""The OpenAPI description of the tracking endpoints, which run outside FastAPI's router (see tracking.py)."""

from __future__ import annotations

from typing import Any

from upsignal.events.schema import MAX_EVENT_BYTES, MESSAGE_TYPES
from upsignal.server.ingest import MAX_BATCH_BYTES

_ID = {"type": ["string", "null"], "minLength": 1, "maxLength": 256}
_TIME = {"type": ["string", "null"], "format": "date-time"}
_OBJECT = {"type": ["object", "null"]}

_REQUIRED = {
    "track": ["event"],
    "group": ["groupId"],
    "alias": ["previousId", "userId"],
}


def _message_schema(message_type: str | None) -> dict[str, Any]:
    types = list(MESSAGE_TYPES) if message_type is None else [message_type]
    schema: dict[str, Any] = {
        "type": "object",
        "description": "A Segment message. userId or anonymousId is required; other fields are kept but not stored.",
        "properties": {
            "type": {"type": "string", "enum": types},
            "messageId": {"type": "string", "minLength": 1, "maxLength": 256,
                          "description": "Deduplicates across the whole store; derived from the content if missing"},
            "userId": _ID, "anonymousId": _ID, "groupId": _ID, "previousId": _ID,
            "event": {"type": ["string", "null"], "maxLength": 8192, "pattern": "\\S"},
            "name": {"type": ["string", "null"], "maxLength": 8192},
            "timestamp": _TIME, "originalTimestamp": _TIME, "sentAt": _TIME,
            "properties": _OBJECT, "traits": _OBJECT, "context": _OBJECT,
        },
        "anyOf": [{"required": ["userId"]}, {"required": ["anonymousId"]}],
    }
    if message_type is not None:
        schema["required"] = _REQUIRED.get(message_type, [])
        schema["properties"]["writeKey"] = {"type": "string", "description": "The write key, if not sent as HTTP Basic"}
    return schema


def _error(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}


_RESPONSES = {
    "200": {"description": "Every message is stored durably",
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Accepted"}}}},
    "400": _error(f"Invalid JSON, body, gzip or message, or over the {MAX_EVENT_BYTES:,}-byte message or"
                  f" {MAX_BATCH_BYTES:,}-byte batch limit. The valid messages of a batch are stored and"
                  " counted in 'stored'; the rejected ones are listed by index in 'errors'."),
    "401": _error("Missing, unknown or revoked write key"),
    "503": {**_error("The server is too far behind or could not make the events durable; nothing was stored,"
                     " so retry the request after the Retry-After delay"),
            "headers": {"Retry-After": {"description": "Seconds to wait before retrying",
                                        "schema": {"type": "integer"}}}},
}

_ACCEPTED = {
    "type": "object",
    "required": ["success", "stored"],
    "properties": {"success": {"type": "boolean", "const": True},
                   "stored": {"type": "integer", "description": "Messages accepted (new or already stored)"}},
}


def tracking_paths() -> dict[str, Any]:
    """Return the OpenAPI path items of the seven tracking endpoints."""
    paths = {}
    for message_type in MESSAGE_TYPES:
        paths[f"/v1/{message_type}"] = {"post": {
            "tags": ["tracking"], "summary": f"Record one {message_type} message",
            "operationId": f"post_{message_type}",
            "security": [{"writeKeyBasic": []}, {}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": _message_schema(message_type)}}},
            "responses": _RESPONSES,
        }}
    paths["/v1/batch"] = {"post": {
        "tags": ["tracking"], "summary": "Record up to 500 KB of messages of any type",
        "operationId": "post_batch",
        "security": [{"writeKeyBasic": []}, {}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["batch"],
            "properties": {
                "batch": {"type": "array", "minItems": 1, "items": _message_schema(None)},
                "sentAt": _TIME,
                "writeKey": {"type": "string", "description": "The write key, if not sent as HTTP Basic"},
            },
        }}}},
        "responses": _RESPONSES,
    }}
    return paths


def add_tracking_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Add the tracking endpoints, their schemas and the write-key security scheme to a FastAPI spec."""
    spec.setdefault("paths", {}).update(tracking_paths())
    components = spec.setdefault("components", {})
    components.setdefault("schemas", {})["Accepted"] = _ACCEPTED
    components.setdefault("securitySchemes", {})["writeKeyBasic"] = {
        "type": "http", "scheme": "basic",
        "description": "The write key as user name and an empty password, as the Segment SDKs send it",
    }
    return spec
