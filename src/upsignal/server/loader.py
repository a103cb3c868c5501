"""Store ingest log records in DuckDB: events, counters, touched identities and the loaded position.

``load_records`` stores any number of records in one transaction. ``INSERT OR
IGNORE`` into ``events`` skips a messageId already stored anywhere, and the
rejected and duplicate counters grow. The identities the new events touch are
queued in ``live_touched`` for live scoring, and ``ingest_log_state.loaded_seq``
moves to the last record's number. Because the position commits with the
events, a crash during a load leaves the store as it was before it, and the
next open loads the same records again.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from upsignal.errors import StoreError
from upsignal.events.writer import rows_to_table
from upsignal.server.ingest import entry_rows
from upsignal.server.ingest_log import (
    LogPosition,
    LogRecord,
    is_open_in_this_process,
    list_segments,
    read_record_at,
    read_records,
)
from upsignal.store import Store
from upsignal.store.database import ingest_log_dir

log = logging.getLogger(__name__)

# Request bytes per transaction when loading a log at open (about 100,000 events); bounds a recovery's memory.
RECOVERY_BYTES_PER_LOAD = 50 * 1024 * 1024
# Every row builder writes properties, traits and context with orjson, so DuckDB may take them as JSON
# without parsing them again. The Arrow extension name marks them as JSON for DuckDB.
_JSON_COLUMNS = ("properties", "traits", "context")
_JSON_METADATA = {"ARROW:extension:name": "arrow.json", "ARROW:extension:metadata": ""}
_NULL_TEXT = pa.scalar(None, pa.string())


@dataclass
class LoadResult:
    """Counts of one load: new events, duplicates skipped, and the last record number loaded."""

    inserted: int
    duplicates: int
    loaded_seq: int


def loaded_seq(conn: duckdb.DuckDBPyConnection) -> int:
    return conn.execute("SELECT loaded_seq FROM ingest_log_state").fetchone()[0]


def records_table(records: list[LogRecord]) -> tuple[pa.Table, int]:
    """Build the event rows of the records' requests; return them and the number of messages rejected.

    The garbage collector is off meanwhile: rows and decoded messages form no
    cycles, and its passes over the growing list of rows more than doubled the
    time of a 200,000-event batch.
    """
    rows, rejected = [], 0
    collecting = gc.isenabled()
    gc.disable()
    try:
        for record in records:
            for entry in record.entries:
                entry_events, entry_rejected = entry_rows(entry)
                rows += entry_events
                rejected += entry_rejected
        return rows_to_table(rows), rejected
    finally:
        if collecting:
            gc.enable()


def build_logged(positions: list[LogPosition], path: Path) -> int:
    """Read records back from the log, write their rows to ``path`` as an Arrow IPC file, return the rejected count.

    The server runs this in a worker process. A file, which the server maps into
    memory, carries the rows back: through the pool's pipe, the server's thread
    that received them held the GIL for about 7% of the time while copying them.
    """
    events, rejected = records_table([read_record_at(position) for position in positions])
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, events.schema) as writer:
        writer.write_table(events)
    return rejected


def read_built(path: Path) -> pa.Table:
    """Map the rows that build_logged wrote; the file may be deleted while the table is in use."""
    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_file(source).read_all()


def load_records(conn: duckdb.DuckDBPyConnection, records: list[LogRecord]) -> LoadResult:
    """Build the records' rows and store them in one transaction, with the loaded position at the last record."""
    return store_events(conn, *records_table(records), records[-1].seq)


def store_events(conn: duckdb.DuckDBPyConnection, events: pa.Table, rejected: int, last_seq: int) -> LoadResult:
    """Store built rows and counters in one transaction and move the loaded position to ``last_seq``."""
    offered = events.num_rows
    conn.execute("BEGIN TRANSACTION")
    try:
        inserted = 0
        if offered:
            inserted = _insert_events(conn, events)
            _queue_touched(conn, events, last_seq)
        if offered > inserted or rejected:
            conn.execute(
                "UPDATE ingest_counters SET value = value + CASE name"
                " WHEN 'duplicates' THEN ? WHEN 'rejected' THEN ? ELSE 0 END",
                [offered - inserted, rejected],
            )
        conn.execute("UPDATE ingest_log_state SET loaded_seq = ?", [last_seq])
        conn.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):
            conn.execute("ROLLBACK")
        raise
    return LoadResult(inserted, offered - inserted, last_seq)


def touched_identities(events: pa.Table) -> pa.Table:
    """Return the distinct (kind, value) identities whose users, accounts or scores the events can change.

    A ``user_key`` is a userId or ``anon:<anonymousId>``, as in user_keys: an
    event's own key, the anonymous key it links to a userId, and an alias's
    previousId in both spellings. A ``group`` is a group call's groupId.
    """
    anonymous_key = _anon(events["anonymous_id"])
    user_id = events["user_id"]
    is_alias = pc.equal(events["type"], "alias")
    previous_id = pc.if_else(is_alias, events["previous_id"], _NULL_TEXT)
    user_keys = [
        pc.coalesce(user_id, anonymous_key),
        pc.if_else(pc.is_valid(user_id), anonymous_key, _NULL_TEXT),
        previous_id,
        _anon(previous_id),
    ]
    groups = pc.if_else(pc.equal(events["type"], "group"), events["group_id"], _NULL_TEXT)
    values = pa.chunked_array([chunk for column in [*user_keys, groups] for chunk in column.chunks], pa.string())
    kinds = pa.chunked_array([pa.repeat("user_key", 4 * events.num_rows), pa.repeat("group", events.num_rows)],
                             pa.string())
    pairs = pa.table({"kind": kinds, "value": values}).filter(pc.is_valid(values))
    return pairs.group_by(["kind", "value"]).aggregate([])


def recover_ingest_log(store: Store) -> int:
    """Load every record of the store's ingest log above the loaded position, then delete the log's segments.

    Called when the store is opened for writing. Returns the events stored. Does
    nothing while an ingest writer of this process has the log open, because
    that writer loads it.
    """
    directory = ingest_log_dir(store.path)
    if directory is None or is_open_in_this_process(directory):
        return 0
    started = time.perf_counter()
    after = loaded_seq(store.conn)
    segments = list_segments(directory)
    if segments and segments[0][0] > after + 1:
        raise StoreError(f"ingest log {directory} starts at record {segments[0][0]} but store {store.path} has"
                         f" loaded only up to record {after}, so the records between are missing (was the store"
                         " file replaced by an older copy?). Move the folder aside to open the store without it")
    inserted = records = 0
    batch: list[LogRecord] = []
    for record in read_records(directory, after):
        batch.append(record)
        records += 1
        if sum(len(entry.body) for item in batch for entry in item.entries) >= RECOVERY_BYTES_PER_LOAD:
            inserted += load_records(store.conn, batch).inserted
            batch = []
    if batch:
        inserted += load_records(store.conn, batch).inserted
    for _, path in segments:
        path.unlink()
    if records:
        log.warning("loaded %d new events from %d records of ingest log %s that the server had not stored when"
                    " it stopped, in %.2f s", inserted, records, directory, time.perf_counter() - started)
    return inserted


def _insert_events(conn: duckdb.DuckDBPyConnection, events: pa.Table) -> int:
    fields = [field.with_metadata(_JSON_METADATA) if field.name in _JSON_COLUMNS else field
              for field in events.schema]
    conn.register("incoming_events", pa.Table.from_arrays(events.columns, schema=pa.schema(fields)))
    try:
        return conn.execute("INSERT OR IGNORE INTO events SELECT * FROM incoming_events").fetchone()[0]
    finally:
        conn.unregister("incoming_events")


def _queue_touched(conn: duckdb.DuckDBPyConnection, events: pa.Table, seq: int) -> None:
    conn.register("incoming_touched", touched_identities(events))
    try:
        conn.execute("INSERT INTO live_touched SELECT ?, kind, value FROM incoming_touched", [seq])
    finally:
        conn.unregister("incoming_touched")


def _anon(ids: pa.ChunkedArray) -> pa.ChunkedArray:
    return pc.binary_join_element_wise("anon:", ids, "")
