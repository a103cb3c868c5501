"""Import events from JSON lines, CSV and Parquet files.

Every record goes through the same validation as the HTTP API. A bad record
is reported with its line (or row) number, field and value and skipped; the
good records around it are stored. Records are written in batches, each in
its own transaction, so a crash loses at most the batch in flight and a
re-run of the same file stores nothing twice.

Validation is the costly part, so large files are validated in worker
processes, one chunk of records each. The main process reads the file and
writes the validated chunks in file order.
"""

from __future__ import annotations

import concurrent.futures
import csv
import gc
import io
import logging
import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import orjson
import pyarrow as pa

from upsignal.errors import ImportFileError, InvalidEventError
from upsignal.events.mapping import Mapping
from upsignal.events.rows import RowContext, event_row
from upsignal.events.schema import DEFAULT_FUTURE_TOLERANCE, MAX_EVENT_BYTES, utc_now
from upsignal.events.writer import EventWriter, rows_to_table
from upsignal.store import Store

log = logging.getLogger(__name__)

Format = Literal["jsonl", "csv", "parquet"]
CHUNK_SIZE = 50_000
BLOCK_BYTES = 8 * 1024 * 1024
MAX_KEPT_ERRORS = 1000
# Below this size, starting worker processes costs more than it saves.
PARALLEL_MIN_BYTES = 16 * 1024 * 1024


@dataclass
class Rejection:
    """One rejected record: where it was, what was wrong, and its raw text."""

    line: int
    message: str
    field: str = ""
    raw: str = ""

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


@dataclass
class ImportReport:
    path: str
    imported: int = 0
    rejected: int = 0
    duplicates: int = 0
    errors: list[Rejection] = field(default_factory=list)

    def reject(self, rejection: Rejection) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_KEPT_ERRORS:
            self.errors.append(rejection)


# A source yields (line number, record, raw text): the record is a JSON line's
# bytes, a row as a dict, or the InvalidEventError that made it unreadable.
SourceRecord = tuple[int, Any, str]


def detect_format(path: Path) -> Format:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise ImportFileError(
        f"cannot tell the format of {path} from its extension; pass --format jsonl, csv or parquet"
    )


def _shorten(raw: bytes | str) -> str:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return text if len(text) <= 200 else text[:197] + "..."


@dataclass(frozen=True)
class _JsonlBlock:
    """Whole lines of a JSON lines file, starting at line ``first_line``.

    Workers receive blocks rather than single lines, so the main process
    neither splits nor pickles line by line.
    """

    first_line: int
    data: bytes

    def records(self) -> Iterator[SourceRecord]:
        lines = self.data.split(b"\n")
        if lines and not lines[-1]:
            lines.pop()
        for number, line in enumerate(lines, start=self.first_line):
            if number == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            line = line.rstrip(b"\r")
            if not line.strip():
                continue
            if len(line) > MAX_EVENT_BYTES:
                error = InvalidEventError(
                    f"event is {len(line)} bytes, over the {MAX_EVENT_BYTES}-byte limit per event",
                    value=len(line),
                )
                yield number, error, _shorten(line)
                continue
            yield number, line, ""


def _jsonl_blocks(handle: io.BufferedReader) -> Iterator[_JsonlBlock]:
    """Cut a JSON lines file into blocks of about BLOCK_BYTES that end on a line end."""
    first_line, pending = 1, b""
    while data := handle.read(BLOCK_BYTES):
        data = pending + data
        cut = data.rfind(b"\n") + 1
        if cut == 0:
            pending = data
            continue
        block, pending = data[:cut], data[cut:]
        yield _JsonlBlock(first_line, block)
        first_line += block.count(b"\n")
    if pending:
        yield _JsonlBlock(first_line, pending)


def _parse_json_line(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as error:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as decode_error:
            problem = (
                f"not valid UTF-8 (byte {line[decode_error.start]:#04x}"
                f" at position {decode_error.start})"
            )
        else:
            problem = f"invalid JSON: {error.msg} at column {error.colno}"
        raise InvalidEventError(problem) from None


def _utf8_lines(handle: io.BufferedReader) -> Iterator[str]:
    for line in handle:
        yield line.decode("utf-8", "surrogateescape")


def _read_csv(handle: io.BufferedReader) -> Iterator[SourceRecord]:
    reader = csv.DictReader(_utf8_lines(handle))
    if reader.fieldnames:
        reader.fieldnames = [name.lstrip("\ufeff").strip() for name in reader.fieldnames]
    line = reader.line_num
    for row in reader:
        start, line = line + 1, reader.line_num
        values = [value for value in row.values() if isinstance(value, str)]
        raw = ",".join(values)
        if any("\udc80" <= char <= "\udcff" for value in values for char in value):
            error = InvalidEventError("not valid UTF-8")
            yield start, error, _shorten(raw.encode("utf-8", "surrogateescape"))
        elif None in row:
            error = InvalidEventError(f"row has more cells than the header's {len(reader.fieldnames)}")
            yield start, error, _shorten(raw)
        else:
            yield start, row, ""


def _read_parquet(path: Path) -> Iterator[SourceRecord]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise ImportFileError(f"cannot read {path} as Parquet: {error}") from error
    number = 0
    for batch in parquet.iter_batches(batch_size=CHUNK_SIZE):
        for row in batch.to_pylist():
            number += 1
            yield number, row, ""


def _check_size(record: dict[str, Any]) -> int:
    """Apply the per-event limit to a record built by a mapping (JSON lines are measured as read)."""
    size = len(orjson.dumps(record, default=str))
    if size > MAX_EVENT_BYTES:
        raise InvalidEventError(
            f"event is {size} bytes, over the {MAX_EVENT_BYTES}-byte limit per event", value=size
        )
    return size


@dataclass(frozen=True)
class _ChunkSettings:
    mapping: Mapping | None
    rows: RowContext


Chunk = _JsonlBlock | list[SourceRecord]


def _validate_chunk(settings: _ChunkSettings, chunk: Chunk) -> tuple[pa.Table, list[Rejection]]:
    """Validate a chunk of source records into an Arrow batch of event rows and a list of rejections."""
    # The loop allocates millions of short-lived objects and no reference cycles;
    # pausing the cycle collector makes validation about three times faster.
    gc.disable()
    try:
        records = chunk.records() if isinstance(chunk, _JsonlBlock) else chunk
        return _validate_records(settings, records)
    finally:
        gc.enable()


def _validate_records(settings: _ChunkSettings, records: Iterator[SourceRecord]) -> tuple[pa.Table, list[Rejection]]:
    rows, rejections = [], []
    for number, record, raw in records:
        try:
            if isinstance(record, InvalidEventError):
                raise record
            if isinstance(record, bytes):
                raw, size = record, len(record)
                record = _parse_json_line(record)
            if settings.mapping is not None:
                record = settings.mapping.apply(record)
                size = _check_size(record)
            rows.append(event_row(record, settings.rows, size))
        except InvalidEventError as error:
            text = _shorten(raw) if raw else _shorten(orjson.dumps(record, default=str))
            rejections.append(Rejection(number, str(error), error.field, text))
    return rows_to_table(rows), rejections


def _chunks(path: Path, file_format: Format, handle: io.BufferedReader) -> Iterator[Chunk]:
    if file_format == "jsonl":
        yield from _jsonl_blocks(handle)
        return
    records = _read_csv(handle) if file_format == "csv" else _read_parquet(path)
    chunk: list[SourceRecord] = []
    for record in records:
        chunk.append(record)
        if len(chunk) >= CHUNK_SIZE:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _validated_chunks(
    settings: _ChunkSettings, chunks: Iterator[Chunk], workers: int
) -> Iterator[tuple[pa.Table, list[Rejection]]]:
    """Validate chunks in file order, in ``workers`` processes when more than one."""
    if workers <= 1:
        for chunk in chunks:
            yield _validate_chunk(settings, chunk)
        return
    # Spawn, not fork, because a forked child would copy the open DuckDB connection and its threads.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending: deque[concurrent.futures.Future] = deque()
        for chunk in chunks:
            pending.append(pool.submit(_validate_chunk, settings, chunk))
            if len(pending) > 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def import_file(
    store: Store,
    path: str | Path,
    file_format: Format | None = None,
    mapping: Mapping | None = None,
    future_tolerance: timedelta = DEFAULT_FUTURE_TOLERANCE,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> ImportReport:
    """Import one file into the store and return counts of imported, rejected and duplicate events.

    ``progress(done, total)`` is called after each chunk with bytes read and
    the file size. ``workers`` sets the validating processes (default: one
    per CPU for files over 16 MiB, else none).
    """
    path = Path(path)
    if not path.is_file():
        raise ImportFileError(f"input file not found: {path}")
    file_format = file_format or detect_format(path)
    if file_format in ("csv", "parquet") and mapping is None:
        raise ImportFileError(f"{file_format} files need a column mapping; pass --mapping MAPPING.yaml")
    total = path.stat().st_size
    if workers is None:
        workers = (os.cpu_count() or 1) if total >= PARALLEL_MIN_BYTES else 1
    report = ImportReport(path=str(path))
    settings = _ChunkSettings(mapping, RowContext(utc_now(), str(path), future_tolerance))
    writer = EventWriter(store)
    with path.open("rb") as handle:
        chunks = _chunks(path, file_format, handle)
        for batch, rejections in _validated_chunks(settings, chunks, workers):
            for rejection in rejections:
                report.reject(rejection)
            result = writer.write_table(batch, rejected=len(rejections))
            report.imported += result.inserted
            report.duplicates += result.duplicates
            if progress and file_format != "parquet":
                progress(handle.tell(), total)
    if progress:
        progress(total, total)
    log.info(
        "imported %s: %d events, %d rejected, %d duplicates",
        path, report.imported, report.rejected, report.duplicates,
    )
    return report
