"""Durable ingest: acknowledge requests after a synced append to the ingest log, load DuckDB behind it.

Request handlers put their validated requests (``ingest.RequestEntry``) on a
queue and wait. Two threads follow:

- the log thread takes everything queued (up to ``max_record_rows`` events) and
  appends it as one record to the ingest log (``ingest_log.py``). It syncs the
  file once with ``fdatasync`` and only then wakes the waiting handlers, whose
  events now survive ``kill -9`` of the server;
- the loader thread has a worker process read back all records appended so
  far and build their rows (``loader.build_logged``), then stores them in one
  DuckDB transaction (``loader.store_events``): events deduplicated by
  messageId, counters, the identities touched for live scoring and the loaded
  position. Then it deletes log segments that are wholly loaded.

Row building runs in a process of its own, at a lower CPU priority. In a thread
of the server, its 3 to 4 microseconds of Python per event held the GIL that the
event loop needs, and benchmarks/ingest.py measured 146,587 acknowledged events/s
with a p99 of 450 ms.

The loader reads records from the log files, not from memory, so a burst that
DuckDB cannot keep up with costs disk space, not memory. Once the request bodies
logged but not loaded would pass ``max_unloaded_bytes``, ``write`` raises
WriterUnavailable, which the endpoints send as 503 with Retry-After. An
in-memory store has no file to keep a log next to, so there the handlers wait
for the load instead.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import concurrent.futures.process
import logging
import os
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from upsignal.events.workers import start_pool, submit
from upsignal.server.ingest import RequestEntry
from upsignal.server.ingest_log import (
    DEFAULT_SEGMENT_BYTES,
    IngestLogWriter,
    LogPosition,
    LogRecord,
    LogWriteError,
)
from upsignal.server.loader import build_logged, loaded_seq, read_built, records_table, store_events
from upsignal.store import Store
from upsignal.store.database import ingest_log_dir

log = logging.getLogger(__name__)

# ServerSettings.ingest_backlog_mb sets it for the server: about 8 million events of 400-600 bytes, which
# the next open of the store loads after a crash, at about 120,000 events/s on the 2-CPU development machine.
DEFAULT_MAX_UNLOADED_BYTES = 4096 * 1024 * 1024
RETRY_AFTER_SECONDS = 1
# The loader waits this long for more records after the first, because each DuckDB transaction costs about
# 2 ms of CPU however few rows it stores. At 2,000 single-event requests per second, loading whatever was
# queued without waiting took as much CPU as handling the requests.
LOAD_WAIT_SECONDS = 0.2
# The row builder, the loader and the live scorer yield the CPU to the event loop that acknowledges requests.
# In benchmarks/ingest.py, niceness 10 instead of 5 acknowledged 404,452 instead of 327,797 events/s, and
# DuckDB stored 120,000 events/s over the burst and the time after it either way.
BUILDER_NICENESS = 10
# Files in the log folder in which the row builder hands rows to the loader.
BUILT_SUFFIX = ".arrow"
_MAX_LOAD_RETRY_SECONDS = 30.0


class WriterUnavailable(Exception):
    """The writer is stopped, too far behind, or failed: nothing of the request was stored, so it may be retried."""

    def __init__(self, message: str, retry_after: int = RETRY_AFTER_SECONDS):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Pending:
    entry: RequestEntry
    future: asyncio.Future[None]
    loop: asyncio.AbstractEventLoop


@dataclass
class _Build:
    """Rows the worker is building: its result is the rejected count, and the rows go to ``path``."""

    future: concurrent.futures.Future[int]
    path: Path


@dataclass
class _Appended:
    """A record on its way to the loader: where it is in the log, or (in-memory stores) the record itself
    with the requests still waiting for it."""

    position: LogPosition | None
    record: LogRecord | None
    rows: int
    nbytes: int
    waiting: list[_Pending] = field(default_factory=list)


class GroupCommitWriter:
    """Makes queued requests durable, many per sync, and loads their events into the store."""

    def __init__(
        self,
        store: Store,
        max_unloaded_bytes: int = DEFAULT_MAX_UNLOADED_BYTES,
        max_record_rows: int = 50_000,
        max_load_rows: int = 200_000,
        load_wait: float = LOAD_WAIT_SECONDS,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
    ):
        self._conn = store.conn.cursor()
        self.max_unloaded_bytes = max_unloaded_bytes
        self._max_record_rows = max_record_rows
        self._max_load_rows = max_load_rows
        self.loaded_seq = loaded_seq(self._conn)
        self._next_seq = self.loaded_seq + 1
        directory = ingest_log_dir(store.path)
        self._log = None if directory is None else IngestLogWriter(directory, self._next_seq, segment_bytes)
        if directory is not None:
            for leftover in directory.glob(f"rows-*{BUILT_SUFFIX}"):
                leftover.unlink()
        # Without a log the requests wait for the load, so the loader must not wait for more.
        self._load_wait = 0.0 if self._log is None else load_wait
        self._incoming: queue.SimpleQueue[_Pending | None] = queue.SimpleQueue()
        self._appended: queue.SimpleQueue[_Appended | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._loaded = threading.Condition()
        self._accepting = False
        self._stop_retrying = threading.Event()
        self._unloaded_bytes = 0
        self._unloaded_rows = 0
        self._builder: concurrent.futures.ProcessPoolExecutor | None = None
        self._log_thread = threading.Thread(target=self._append_loop, name="upsignal-ingest-log", daemon=True)
        self._load_thread = threading.Thread(target=self._load_loop, name="upsignal-ingest-loader", daemon=True)
        self.rows = 0

    @property
    def unloaded_rows(self) -> int:
        """Rows accepted but not yet stored in DuckDB (acknowledged ones, when there is a log)."""
        return self._unloaded_rows

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Wait until every record appended before the call is stored in DuckDB; return False on timeout."""
        target = self._next_seq - 1
        with self._loaded:
            return self._loaded.wait_for(lambda: self.loaded_seq >= target, timeout)

    def start(self) -> None:
        if self._log is not None:
            self._builder = _start_builder()
        self._accepting = True
        self._log_thread.start()
        self._load_thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Append and load everything queued, then stop both threads; unloaded records stay in the log."""
        with self._lock:
            if self._accepting:
                self._incoming.put(None)
            self._accepting = False
        if self._log_thread.ident is not None:
            self._log_thread.join(timeout)
        if self._load_thread.is_alive() and not self._log_thread.is_alive():
            self._load_thread.join(timeout)
        if self._load_thread.is_alive():
            self._stop_retrying.set()
            self._load_thread.join(5.0)
        if self._log is not None and not self._log_thread.is_alive():
            self._log.close(self.loaded_seq)
        if self._unloaded_rows:
            log.warning("stopped with %d events not yet stored; the next open of the store loads them from the"
                        " ingest log", self._unloaded_rows)
        if self._builder is not None:
            self._builder.shutdown(wait=True, cancel_futures=True)
        self._conn.close()

    async def write(self, entry: RequestEntry) -> None:
        """Make a request durable; returns once it is synced to the log (or stored)."""
        loop = asyncio.get_running_loop()
        pending = _Pending(entry, loop.create_future(), loop)
        nbytes = len(entry.body)
        with self._lock:
            if not self._accepting:
                raise WriterUnavailable("the ingest writer is not running")
            if self._unloaded_bytes and self._unloaded_bytes + nbytes > self.max_unloaded_bytes:
                raise WriterUnavailable(f"the store is {self._unloaded_rows:,} events behind the requests it"
                                        " acknowledged; retry after a short wait")
            self._unloaded_bytes += nbytes
            self._unloaded_rows += entry.accepted
            self._incoming.put(pending)
        await pending.future

    # -- log thread ------------------------------------------------------------------------------

    def _append_loop(self) -> None:
        try:
            stop = False
            while not stop:
                first = self._incoming.get()
                if first is None:
                    break
                batch, stop = _drain(self._incoming, first, self._max_record_rows, lambda item: item.entry.accepted)
                self._append(batch)
        finally:
            with self._lock:
                self._accepting = False
            self._appended.put(None)

    def _append(self, batch: list[_Pending]) -> None:
        entries = [item.entry for item in batch]
        rejected = sum(entry.rejected for entry in entries)
        nbytes = sum(len(entry.body) for entry in entries)
        rows = sum(entry.accepted for entry in entries)
        try:
            position = None if self._log is None else self._log.append(entries)
        except Exception as error:  # the thread must outlive any failure, or every waiting request would hang
            if isinstance(error, (LogWriteError, OSError)):
                log.error("appending %d requests to the ingest log failed: %s", len(batch), error)
            else:
                log.exception("unexpected failure appending %d requests to the ingest log", len(batch))
            self._release(nbytes, rows)
            _settle(batch, WriterUnavailable(f"the events could not be made durable: {error}"))
            return
        # Counted before any request gets its response, so that a wait_loaded call after one waits for this record.
        self._next_seq += 1
        if position is None:
            appended = _Appended(None, LogRecord(self._next_seq - 1, entries, rejected), rows, nbytes, batch)
        else:
            appended = _Appended(position, None, rows, nbytes)
            _settle(batch, None)
        self._appended.put(appended)

    # -- loader thread ---------------------------------------------------------------------------

    def _load_loop(self) -> None:
        """Store batches of records; while one is stored, the worker builds the rows of the next."""
        lower_thread_priority()
        ahead: tuple[list[_Appended], _Build | None] | None = None
        stop = False
        while ahead is not None or not stop:
            if ahead is None:
                batch, stop = self._take_batch(block=True)
                if batch is None:
                    break
                ahead = batch, self._start_build(batch)
            (batch, building), ahead = ahead, None
            if not stop:
                following, stop = self._take_batch(block=False)
                if following is not None:
                    ahead = following, self._start_build(following)
            self._load(batch, building)

    def _take_batch(self, block: bool) -> tuple[list[_Appended] | None, bool]:
        """Take the next records to load, and whether the stop marker came.

        The batch is None after the stop marker, or when nothing is queued and ``block`` is false.
        """
        try:
            first = self._appended.get(block=block)
        except queue.Empty:
            return None, False
        if first is None:
            return None, True
        return _drain(self._appended, first, self._max_load_rows, lambda item: item.rows,
                      self._load_wait if block else 0.0)

    def _start_build(self, batch: list[_Appended]) -> _Build | None:
        """Have the worker start building a batch's rows; None without one (in-memory stores)."""
        if self._builder is None:
            return None
        path = self._log.directory / f"rows-{batch[0].position.seq}-{batch[-1].position.seq}{BUILT_SUFFIX}"
        try:
            return _Build(submit(self._builder, build_logged, [item.position for item in batch], path), path)
        except RuntimeError as error:  # a broken pool raises here; _load then starts a new one and builds again
            log.error("submitting rows to build to the ingest row builder failed: %s", error)
            return None

    def _load(self, batch: list[_Appended], building: _Build | None) -> None:
        waiting = [pending for item in batch for pending in item.waiting]
        first_seq = batch[0].position.seq if batch[0].position else batch[0].record.seq
        last_seq = first_seq + len(batch) - 1
        nbytes, rows = sum(item.nbytes for item in batch), sum(item.rows for item in batch)
        started = time.perf_counter()
        delay = 0.1
        while True:
            try:
                if self._builder is None:
                    events, rejected = records_table([item.record for item in batch])
                else:
                    events, rejected = self._built(building or self._start_build(batch))
                result = store_events(self._conn, events, rejected, last_seq)
                break
            except Exception as error:  # the thread must outlive any failure, or acknowledged events would wait forever
                building = None
                if self._log is None:
                    log.error("storing %d queued requests failed: %s", len(waiting), error)
                    self._release(nbytes, rows)
                    _settle(waiting, WriterUnavailable(f"the store failed to save the events: {error}"))
                    return
                log.error("loading ingest log records %d-%d failed: %s; retrying in %.1f s",
                          first_seq, last_seq, error, delay)
                if self._stop_retrying.wait(delay):
                    return
                delay = min(delay * 2, _MAX_LOAD_RETRY_SECONDS)
        self.rows += result.inserted
        self._release(nbytes, rows)
        with self._loaded:
            self.loaded_seq = result.loaded_seq
            self._loaded.notify_all()
        if self._log is not None:
            try:
                self._log.delete_loaded(result.loaded_seq)
            except OSError as error:
                log.error("deleting ingest log segments loaded up to record %d failed: %s", result.loaded_seq, error)
        log.debug("loaded %d of %d events from ingest log records %d-%d in %.1f ms", result.inserted,
                  result.inserted + result.duplicates, first_seq, last_seq, (time.perf_counter() - started) * 1000)
        _settle(waiting, None)

    def _built(self, building: _Build | None) -> tuple[pa.Table, int]:
        """Wait for the rows the worker builds; start a new worker if the old one died."""
        try:
            if building is None:
                raise concurrent.futures.process.BrokenProcessPool("the row builder did not take the batch")
            rejected = building.future.result()
            try:
                return read_built(building.path), rejected
            finally:
                building.path.unlink()
        except concurrent.futures.process.BrokenProcessPool:
            log.error("the ingest row builder process died; starting a new one")
            self._builder.shutdown(wait=False, cancel_futures=True)
            self._builder = _start_builder()
            raise

    def _release(self, nbytes: int, rows: int) -> None:
        with self._lock:
            self._unloaded_bytes -= nbytes
            self._unloaded_rows -= rows


def lower_thread_priority() -> None:
    """Give the calling thread the row builder's lower CPU priority, where the system allows it (Linux).

    Background threads that store and score events then yield the CPU to the
    event loop that acknowledges requests, and use what it leaves.
    """
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BUILDER_NICENESS)
        except OSError as error:
            log.warning("cannot lower the priority of thread %s: %s", threading.current_thread().name, error)


def _start_builder() -> concurrent.futures.ProcessPoolExecutor:
    """Start the row builder process and have it import upsignal, so the first load does not wait for that."""
    pool = start_pool(1, niceness=BUILDER_NICENESS)
    submit(pool, records_table, [])
    return pool


def _drain(source: queue.SimpleQueue, first, max_rows: int, rows_of, wait: float = 0.0) -> tuple[list, bool]:
    """Take ``first`` and what else is queued or comes within ``wait`` seconds, up to ``max_rows``.

    The flag is set if the stop marker came.
    """
    batch, rows = [first], rows_of(first)
    deadline = time.monotonic() + wait
    while rows < max_rows:
        try:
            item = source.get(timeout=max(deadline - time.monotonic(), 0.0))
        except queue.Empty:
            break
        if item is None:
            return batch, True
        batch.append(item)
        rows += rows_of(item)
    return batch, False


def _settle(batch: list[_Pending], error: Exception | None) -> None:
    """Wake every waiting handler, with one callback per event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
    for item in batch:
        by_loop.setdefault(item.loop, []).append(item)
    for loop, items in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, items, error)
        except RuntimeError:
            log.warning("a request's event loop closed before its events were made durable")


def _resolve(items: list[_Pending], error: Exception | None) -> None:
    for item in items:
        if item.future.done():
            continue
        if error is None:
            item.future.set_result(None)
        else:
            item.future.set_exception(error)
