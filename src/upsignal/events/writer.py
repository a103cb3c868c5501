"""Append validated event rows to the store in Arrow batches, deduplicated by messageId."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from upsignal.events.schema import EVENT_COLUMNS
from upsignal.store import Store

log = logging.getLogger(__name__)

_ARROW_SCHEMA = pa.schema(
    [
        ("message_id", pa.string()),
        ("type", pa.string()),
        ("event", pa.string()),
        ("name", pa.string()),
        ("user_id", pa.string()),
        ("anonymous_id", pa.string()),
        ("group_id", pa.string()),
        ("previous_id", pa.string()),
        ("timestamp", pa.timestamp("us")),
        ("received_at", pa.timestamp("us")),
        ("properties", pa.string()),
        ("traits", pa.string()),
        ("context", pa.string()),
        ("source", pa.string()),
        ("timestamp_clamped", pa.bool_()),
    ]
)


@dataclass
class WriteResult:
    inserted: int = 0
    duplicates: int = 0


class EventWriter:
    """Writes event rows; each ``write`` call is one transaction, so it lands whole or not at all."""

    def __init__(self, store: Store):
        self.store = store

    def write(self, rows: list[tuple[Any, ...]], rejected: int = 0) -> WriteResult:
        """Insert rows whose messageId is new; count the rest as duplicates.

        ``rejected`` is added to the store's rejected-message counter in the
        same transaction, so the counters never drift from the events.
        """
        unique: dict[str, tuple[Any, ...]] = {}
        for row in rows:
            unique.setdefault(row[0], row)
        columns = list(zip(*unique.values())) if unique else [[] for _ in EVENT_COLUMNS]
        batch = pa.Table.from_arrays(
            [pa.array(column, type=field.type) for column, field in zip(columns, _ARROW_SCHEMA)],
            schema=_ARROW_SCHEMA,
        )
        conn = self.store.conn
        with self.store.transaction():
            inserted = 0
            if len(batch):
                conn.register("incoming_events", batch)
                try:
                    inserted = conn.execute(
                        "INSERT OR IGNORE INTO events SELECT * FROM incoming_events"
                    ).fetchone()[0]
                finally:
                    conn.unregister("incoming_events")
            duplicates = len(rows) - inserted
            if duplicates or rejected:
                conn.execute(
                    "UPDATE ingest_counters SET value = value + CASE name"
                    " WHEN 'duplicates' THEN ? WHEN 'rejected' THEN ? END",
                    [duplicates, rejected],
                )
        return WriteResult(inserted=inserted, duplicates=duplicates)
