"""Group commit: one thread stores the events of many requests in one DuckDB transaction.

DuckDB allows one writing process per file, and a commit per request would cap
ingest at a few hundred requests per second. Request handlers therefore put
their Arrow tables on a queue and wait. The writer thread takes everything
queued (up to ``max_rows``) and inserts it with one ``INSERT OR IGNORE``, which
skips a messageId already stored anywhere. In the same transaction it adds the
rejected and duplicate counts and the identities touched for live scoring.
Only after the commit does it wake the waiting handlers. DuckDB writes its write-ahead log at commit, so an
acknowledged event survives ``kill -9`` of the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from upsignal.errors import StoreError
from upsignal.store import Store

log = logging.getLogger(__name__)

# Identities whose users, accounts or scores an event can change; see live.resolve_touched.
TOUCHED_SQL = """
INSERT INTO live_touched
SELECT DISTINCT ?, kind, value FROM (
  SELECT 'user_key' AS kind, COALESCE(user_id, 'anon:' || anonymous_id) AS value FROM incoming_events
  UNION ALL
  SELECT 'user_key', 'anon:' || anonymous_id FROM incoming_events
  WHERE user_id IS NOT NULL AND anonymous_id IS NOT NULL
  UNION ALL
  SELECT 'user_key', previous_id FROM incoming_events WHERE type = 'alias' AND previous_id IS NOT NULL
  UNION ALL
  SELECT 'user_key', 'anon:' || previous_id FROM incoming_events WHERE type = 'alias' AND previous_id IS NOT NULL
  UNION ALL
  SELECT 'group', group_id FROM incoming_events WHERE type = 'group' AND group_id IS NOT NULL
)
WHERE value IS NOT NULL
"""


class WriterUnavailable(Exception):
    """The writer stopped, its queue is full, or the store failed: the request may be retried."""


@dataclass
class _Pending:
    table: pa.Table
    rejected: int
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


class GroupCommitWriter:
    """Stores queued Arrow tables of event rows, many requests per transaction."""

    def __init__(self, store: Store, max_rows: int = 50_000, max_queued: int = 2_000):
        self._conn = store.conn.cursor()
        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=max_queued)
        self._max_rows = max_rows
        self._seq = store.scalar("SELECT COALESCE(max(seq), 0) FROM live_touched")
        self._thread = threading.Thread(target=self._run, name="upsignal-ingest-writer", daemon=True)
        self._stopped = threading.Event()
        self.commits = 0
        self.rows = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Store what is queued, then stop the thread."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)
        self._stopped.set()
        self._conn.close()

    async def write(self, table: pa.Table, rejected: int = 0) -> None:
        """Store a table of event rows; returns once they are committed."""
        if self._stopped.is_set() or not self._thread.is_alive():
            raise WriterUnavailable("the ingest writer is not running")
        loop = asyncio.get_running_loop()
        pending = _Pending(table, rejected, loop.create_future(), loop)
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            raise WriterUnavailable("the ingest queue is full; retry after a short wait") from None
        await pending.future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch, stop = self._drain(first)
            self._commit(batch)
            if stop:
                return

    def _drain(self, first: _Pending) -> tuple[list[_Pending], bool]:
        batch, rows = [first], first.table.num_rows
        while rows < self._max_rows:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                return batch, True
            batch.append(item)
            rows += item.table.num_rows
        return batch, False

    def _commit(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            inserted, offered = self._store(batch)
        except (duckdb.Error, StoreError) as error:
            log.error("storing %d queued requests failed: %s", len(batch), error)
            _settle(batch, WriterUnavailable(f"the store failed to save the events: {error}"))
            return
        except Exception as error:  # the thread must outlive any failure, or every handler would hang
            log.exception("unexpected failure storing %d queued requests", len(batch))
            _settle(batch, WriterUnavailable(f"the events could not be stored: {error}"))
            return
        self.commits += 1
        self.rows += inserted
        log.debug("stored %d of %d events from %d requests in %.1f ms",
                  inserted, offered, len(batch), (time.perf_counter() - started) * 1000)
        _settle(batch, None)

    def _store(self, batch: list[_Pending]) -> tuple[int, int]:
        tables = [item.table for item in batch if item.table.num_rows]
        rejected = sum(item.rejected for item in batch)
        offered = sum(table.num_rows for table in tables)
        conn = self._conn
        conn.execute("BEGIN TRANSACTION")
        try:
            inserted = 0
            if tables:
                conn.register("incoming_events", pa.concat_tables(tables))
                try:
                    inserted = conn.execute("INSERT OR IGNORE INTO events SELECT * FROM incoming_events").fetchone()[0]
                    self._seq += 1
                    conn.execute(TOUCHED_SQL, [self._seq])
                finally:
                    conn.unregister("incoming_events")
            if offered > inserted or rejected:
                conn.execute(
                    "UPDATE ingest_counters SET value = value + CASE name"
                    " WHEN 'duplicates' THEN ? WHEN 'rejected' THEN ? ELSE 0 END",
                    [offered - inserted, rejected],
                )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(duckdb.Error):
                conn.execute("ROLLBACK")
            raise
        return inserted, offered


def _settle(batch: list[_Pending], error: Exception | None) -> None:
    """Wake every waiting handler, with one callback per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
    for item in batch:
        by_loop.setdefault(item.loop, []).append(item)
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, items, error)
        except RuntimeError:
            log.warning("a request's event loop closed before its events were committed")


def _resolve(items: list[_Pending], error: Exception | None) -> None:
    for item in items:
        if item.future.done():
            continue
        if error is None:
            item.future.set_result(None)
        else:
            item.future.set_exception(error)
