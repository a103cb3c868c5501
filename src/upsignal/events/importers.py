"""Import events from JSON lines, CSV, TSV and Parquet files.

Every record goes through the same validation as the HTTP API. A bad record
is reported with its line (or row) number, field and value and skipped; the
good records around it are stored. Records are written in batches, each in
its own transaction, so a crash loses at most the batch in flight and a
re-run of the same file stores nothing twice.

Validation is the costly part, so large files are validated in worker
processes, one chunk of records each. The main process reads the file and
writes the validated chunks in file order. A mapping's columns are checked
against a CSV header or Parquet schema before any record is read.
"""

from __future__ import annotations

import csv
import functools
import gc
import io
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import orjson
import pyarrow as pa

from upsignal.errors import ImportFileError, InvalidEventError
from upsignal.events.mapping import Mapping
from upsignal.events.rows import RowContext, event_row
from upsignal.events.schema import DEFAULT_FUTURE_TOLERANCE, MAX_EVENT_BYTES, json_bytes, utc_now
from upsignal.events.workers import ordered_map
from upsignal.events.writer import EventWriter, rows_to_table
from upsignal.store import Store

log = logging.getLogger(__name__)

Format = Literal["jsonl", "csv", "tsv", "parquet"]
FORMATS: tuple[Format, ...] = ("jsonl", "csv", "tsv", "parquet")
_DELIMITERS = {"csv": ",", "tsv": "\t"}
CHUNK_SIZE = 50_000
BLOCK_BYTES = 8 * 1024 * 1024
# Rows per insert transaction: each transaction's fixed cost in DuckDB's index
# made 30,000-row inserts about a third slower per row.
WRITE_ROWS = 75_000
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
    if suffix == ".csv":
        return "csv"
    if suffix == ".tsv":
        return "tsv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise ImportFileError(
        f"cannot tell the format of {path} from its extension; pass --format jsonl, csv, tsv or parquet"
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


def _csv_header(names: list[str] | None) -> list[str]:
    return [name.lstrip("\ufeff").strip() for name in names or []]


def _read_csv(handle: io.BufferedReader, delimiter: str) -> Iterator[SourceRecord]:
    reader = csv.DictReader(_utf8_lines(handle), delimiter=delimiter)
    if reader.fieldnames:
        reader.fieldnames = _csv_header(reader.fieldnames)
    line = reader.line_num
    for row in reader:
        start, line = line + 1, reader.line_num
        values = [value for value in row.values() if isinstance(value, str)]
        raw = delimiter.join(values)
        if any("\udc80" <= char <= "\udcff" for value in values for char in value):
            error = InvalidEventError("not valid UTF-8")
            yield start, error, _shorten(raw.encode("utf-8", "surrogateescape"))
        elif None in row:
            error = InvalidEventError(f"row has more cells than the header's {len(reader.fieldnames)}")
            yield start, error, _shorten(raw)
        else:
            yield start, row, ""


def _open_parquet(path: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise ImportFileError(f"cannot read {path} as Parquet: {error}") from error


def _read_parquet(path: Path) -> Iterator[SourceRecord]:
    number = 0
    for batch in _open_parquet(path).iter_batches(batch_size=CHUNK_SIZE):
        for row in batch.to_pylist():
            number += 1
            yield number, row, ""


def _check_mapped_columns(path: Path, file_format: Format, mapping: Mapping) -> None:
    """Raise ImportFileError if the mapping names a column the CSV header or Parquet schema lacks.

    JSON lines are not checked, because a foreign JSON record's keys vary from line to line.
    """
    if file_format == "parquet":
        schema = _open_parquet(path).schema_arrow
        structs = {item.name for item in schema if pa.types.is_struct(item.type)}
        mapping.check_columns(
            schema.names, path.name,
            lambda column: column in schema.names or column.split(".")[0] in structs,
        )
    elif file_format in _DELIMITERS:
        with path.open("rb") as handle:
            first_row = next(csv.reader(_utf8_lines(handle), delimiter=_DELIMITERS[file_format]), None)
        mapping.check_columns(_csv_header(first_row), path.name)


def check_files(paths: Iterable[Path], file_format: Format | None = None, mapping: Mapping | None = None) -> None:
    """Check that every file can be imported before any is, raising one ImportFileError for all problems.

    Each file must exist and have a known format, and CSV, TSV and Parquet
    files need a mapping whose columns they have.
    """
    missing, problems = [], []
    for path in paths:
        if not path.is_file():
            missing.append(str(path))
            continue
        try:
            _check_file(path, file_format or detect_format(path), mapping)
        except ImportFileError as error:
            problems.append(str(error))
    if missing:
        problems.insert(0, f"input {'file' if len(missing) == 1 else 'files'} not found: {', '.join(missing)}")
    if len(problems) == 1:
        raise ImportFileError(problems[0])
    if problems:
        raise ImportFileError("nothing was imported, because:\n  " + "\n  ".join(problems))


def _check_file(path: Path, file_format: Format, mapping: Mapping | None) -> None:
    if file_format != "jsonl" and mapping is None:
        raise ImportFileError(f"{file_format} files need a column mapping; pass --mapping MAPPING.yaml")
    if mapping is not None:
        _check_mapped_columns(path, file_format, mapping)


def _check_size(record: dict[str, Any]) -> int:
    """Apply the per-event limit to a record built by a mapping (JSON lines are measured as read)."""
    size = len(json_bytes(record))
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
            text = _shorten(raw) if raw else _shorten(json_bytes(record))
            rejections.append(Rejection(number, str(error), error.field, text))
    return rows_to_table(rows), rejections


def _chunks(path: Path, file_format: Format, handle: io.BufferedReader) -> Iterator[Chunk]:
    if file_format == "jsonl":
        yield from _jsonl_blocks(handle)
        return
    if file_format == "parquet":
        records = _read_parquet(path)
    else:
        records = _read_csv(handle, _DELIMITERS[file_format])
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
        return (_validate_chunk(settings, chunk) for chunk in chunks)
    return ordered_map(functools.partial(_validate_chunk, settings), chunks, workers)


@contextmanager
def _few_checkpoints(store: Store) -> Iterator[None]:
    """Let the write-ahead log grow to 512 MiB during an import, then checkpoint once.

    DuckDB checkpoints when its log passes 16 MiB by default, and each checkpoint
    rewrites the messageId index, so a large import spent a growing share of its
    time in checkpoints. With 10 M generated events on the 2-CPU development
    machine, import ran at 106,000 events/s with the default and 179,000 with
    this and WRITE_ROWS (benchmarks/score.py); 1 GiB was no faster but raised the
    peak memory from 1.3 to 1.9 GiB.
    """
    if store.path == ":memory:":
        yield
        return
    previous = store.scalar("SELECT current_setting('checkpoint_threshold')")
    store.conn.execute("SET checkpoint_threshold = '512MiB'")
    try:
        yield
    finally:
        store.conn.execute(f"SET checkpoint_threshold = '{previous}'")
    store.conn.execute("CHECKPOINT")


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
    per CPU for files over 16 MiB, else none). ``.tsv`` files are read as
    tab-separated. Raises ImportFileError, before storing anything, if the
    file is missing, its format unknown, or a mapping names a column that a
    CSV, TSV or Parquet file lacks. On KeyboardInterrupt the batches already
    written stay stored, and a re-run skips them as duplicates.
    """
    path = Path(path)
    if not path.is_file():
        raise ImportFileError(f"input file not found: {path}")
    file_format = file_format or detect_format(path)
    _check_file(path, file_format, mapping)
    total = path.stat().st_size
    if workers is None:
        workers = (os.cpu_count() or 1) if total >= PARALLEL_MIN_BYTES else 1
    report = ImportReport(path=str(path))
    settings = _ChunkSettings(mapping, RowContext(utc_now(), str(path), future_tolerance))
    writer = EventWriter(store)
    with path.open("rb") as handle, _few_checkpoints(store):
        chunks = _chunks(path, file_format, handle)
        with closing(_validated_chunks(settings, chunks, workers)) as batches:
            pending, pending_rejected = [], 0
            for batch, rejections in batches:
                for rejection in rejections:
                    report.reject(rejection)
                pending.append(batch)
                pending_rejected += len(rejections)
                if sum(len(item) for item in pending) < WRITE_ROWS:
                    continue
                result = writer.write_table(pa.concat_tables(pending), rejected=pending_rejected)
                pending, pending_rejected = [], 0
                report.imported += result.inserted
                report.duplicates += result.duplicates
                if progress and file_format != "parquet":
                    progress(handle.tell(), total)
            if pending or pending_rejected:
                result = writer.write_table(pa.concat_tables(pending) if pending else rows_to_table([]),
                                            rejected=pending_rejected)
                report.imported += result.inserted
                report.duplicates += result.duplicates
    if progress:
        progress(total, total)
    log.info(
        "imported %s: %d events, %d rejected, %d duplicates",
        path, report.imported, report.rejected, report.duplicates,
    )
    return report
