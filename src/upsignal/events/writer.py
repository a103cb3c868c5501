"""Append validated event rows to the store in Arrow batches, deduplicated by messageId."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from upsignal.events.schema import EVENT_COLUMNS
from upsignal.store import Store

log = logging.getLogger(__name__)

ARROW_SCHEMA = pa.schema(
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
        """Insert rows (in EVENT_COLUMNS order) whose messageId is new; see ``write_table``."""
        return self.write_table(rows_to_table(rows), rejected)

    def write_table(self, batch: pa.Table, rejected: int = 0) -> WriteResult:
        """Insert a batch whose messageIds are new and count the rest as duplicates.

        Duplicates within the batch are stored once too. ``rejected`` is added to
        the store's rejected-message counter in the same transaction, so the
        counters never drift from the events.
        """
        conn = self.store.conn
        try:
            with query_interrupts_raised(), self.store.transaction():
                inserted = 0
                if len(batch):
                    conn.register("incoming_events", batch)
                    inserted = conn.execute(
                        "INSERT OR IGNORE INTO events SELECT * FROM incoming_events"
                    ).fetchone()[0]
                duplicates = len(batch) - inserted
                if duplicates or rejected:
                    conn.execute(
                        "UPDATE ingest_counters SET value = value + CASE name"
                        " WHEN 'duplicates' THEN ? WHEN 'rejected' THEN ? END",
                        [duplicates, rejected],
                    )
        finally:
            # Unregistered after the transaction ends, because an INSERT that
            # Ctrl-C interrupted aborts it and DuckDB then rejects unregister.
            conn.unregister("incoming_events")
        return WriteResult(inserted=inserted, duplicates=duplicates)


@contextmanager
def query_interrupts_raised() -> Iterator[None]:
    """Raise KeyboardInterrupt for a DuckDB query that Ctrl-C interrupted.

    DuckDB 2.0 turns a SIGINT that arrives during a query into
    ``RuntimeError("Query interrupted")``, which would otherwise reach the
    user as a crash rather than as the interrupt it was.
    """
    try:
        yield
    except duckdb.InterruptException:
        raise KeyboardInterrupt from None
    except RuntimeError as error:
        if str(error) == "Query interrupted":
            raise KeyboardInterrupt from None
        raise


_SMALL_BATCH_ROWS = 8


def rows_to_table(rows: list[tuple[Any, ...]]) -> pa.Table:
    """Turn event rows (tuples in EVENT_COLUMNS order) into an Arrow table for ``write_table``."""
    if 0 < len(rows) <= _SMALL_BATCH_ROWS:
        # One pa.array call per column costs about 100 microseconds whatever the row
        # count; for a single /v1/track message, building from dicts takes half that.
        return pa.Table.from_pylist([dict(zip(EVENT_COLUMNS, row)) for row in rows], schema=ARROW_SCHEMA)
    columns = list(zip(*rows)) if rows else [[] for _ in EVENT_COLUMNS]
    return pa.Table.from_arrays(
        [pa.array(column, type=field.type) for column, field in zip(columns, ARROW_SCHEMA)],
        schema=ARROW_SCHEMA,
    )
