"""Shared fixtures: a fresh in-memory store and a helper that writes Segment events."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import orjson
import pytest

from upsignal.events.schema import deterministic_message_id, event_timestamp, parse_message, to_row
from upsignal.events.writer import EventWriter
from upsignal.store import Store

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def store():
    with Store(":memory:") as fresh:
        yield fresh


def add_events(store: Store, *records: dict) -> int:
    """Validate and store Segment-shaped records as the importers do; return how many were new."""
    received_at = datetime(2100, 1, 1)
    rows = []
    for record in records:
        message = parse_message(record)
        timestamp, clamped = event_timestamp(message, received_at)
        message_id = message.messageId or deterministic_message_id(record)
        rows.append(to_row(message, message_id, timestamp, clamped, received_at, "test"))
    return EventWriter(store).write(rows).inserted


def write_jsonl(path: Path, *records: dict | str | bytes) -> Path:
    """Write records (dicts as JSON, str/bytes as given) one per line."""
    with path.open("wb") as handle:
        for record in records:
            if isinstance(record, dict):
                record = orjson.dumps(record)
            elif isinstance(record, str):
                record = record.encode()
            handle.write(record + b"\n")
    return path
