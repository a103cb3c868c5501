"""Import events from JSON lines, CSV and Parquet files.

Every record goes through the same validation as the HTTP API. A bad record
is reported with its line (or row) number, field and value and skipped; the
good records around it are stored. Records are written in batches, each in
its own transaction, so a crash loses at most the batch in flight and a
re-run of the same file stores nothing twice.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import orjson

from upsignal.errors import ImportFileError, InvalidEventError
from upsignal.events.mapping import Mapping
from upsignal.events.schema import (
    DEFAULT_FUTURE_TOLERANCE,
    MAX_EVENT_BYTES,
    deterministic_message_id,
    event_timestamp,
    parse_message,
    to_row,
    utc_now,
)
from upsignal.events.writer import EventWriter
from upsignal.store import Store

log = logging.getLogger(__name__)

Format = Literal["jsonl", "csv", "parquet"]
BATCH_SIZE = 50_000
MAX_KEPT_ERRORS = 1000


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


# A source yields (line number, record or the error that made it unreadable, raw text).
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


def _read_jsonl(handle: io.BufferedReader) -> Iterator[SourceRecord]:
    for number, line in enumerate(handle, start=1):
        if number == 1 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]
        if not line.strip():
            continue
        if len(line.rstrip(b"\r\n")) > MAX_EVENT_BYTES:
            size = len(line.rstrip(b"\r\n"))
            yield number, InvalidEventError(
                f"event is {size} bytes, over the {MAX_EVENT_BYTES}-byte limit per event",
                value=size,
            ), _shorten(line)
            continue
        try:
            yield number, orjson.loads(line), ""
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
            yield number, InvalidEventError(problem), _shorten(line)


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
            yield start, InvalidEventError("not valid UTF-8"), _shorten(raw.encode("utf-8", "surrogateescape"))
        elif None in row:
            yield start, InvalidEventError(f"row has more cells than the header's {len(reader.fieldnames)}"), _shorten(raw)
        else:
            yield start, row, ""


def _read_parquet(path: Path) -> Iterator[SourceRecord]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise ImportFileError(f"cannot read {path} as Parquet: {error}") from error
    number = 0
    for batch in parquet.iter_batches(batch_size=BATCH_SIZE):
        for row in batch.to_pylist():
            number += 1
            yield number, row, ""


class _Validator:
    """Turns source records into event rows, recording rejections in the report."""

    def __init__(self, mapping: Mapping | None, source: str, future_tolerance: timedelta, report: ImportReport):
        self.mapping = mapping
        self.source = source
        self.future_tolerance = future_tolerance
        self.report = report
        self.received_at = utc_now()

    def row(self, number: int, record: Any, raw: str) -> tuple[Any, ...] | None:
        try:
            if isinstance(record, InvalidEventError):
                raise record
            if self.mapping is not None:
                record = self.mapping.apply(record)
                _check_size(record)
            message = parse_message(record)
            timestamp, clamped = event_timestamp(
                message, self.received_at, self.future_tolerance, clamp_future=False
            )
        except InvalidEventError as error:
            text = raw or _shorten(orjson.dumps(record, default=str))
            self.report.reject(Rejection(number, str(error), error.field, text))
            return None
        message_id = message.messageId or deterministic_message_id(record)
        return to_row(message, message_id, timestamp, clamped, self.received_at, self.source)


def _check_size(record: dict[str, Any]) -> None:
    """Apply the per-event limit to a record built by a mapping (JSON lines are measured as read)."""
    size = len(orjson.dumps(record, default=str))
    if size > MAX_EVENT_BYTES:
        raise InvalidEventError(
            f"event is {size} bytes, over the {MAX_EVENT_BYTES}-byte limit per event", value=size
        )


def _records(path: Path, file_format: Format, handle: io.BufferedReader | None) -> Iterator[SourceRecord]:
    if file_format == "jsonl":
        return _read_jsonl(handle)
    if file_format == "csv":
        return _read_csv(handle)
    return _read_parquet(path)


def import_file(
    store: Store,
    path: str | Path,
    file_format: Format | None = None,
    mapping: Mapping | None = None,
    future_tolerance: timedelta = DEFAULT_FUTURE_TOLERANCE,
    progress: Callable[[int, int], None] | None = None,
) -> ImportReport:
    """Import one file into the store and return counts of imported, rejected and duplicate events.

    ``progress(done, total)`` is called after each batch with bytes read and
    the file size.
    """
    path = Path(path)
    if not path.is_file():
        raise ImportFileError(f"input file not found: {path}")
    file_format = file_format or detect_format(path)
    if file_format in ("csv", "parquet") and mapping is None:
        raise ImportFileError(
            f"{file_format} files need a column mapping; pass --mapping MAPPING.yaml"
        )
    report = ImportReport(path=str(path))
    validator = _Validator(mapping, str(path), future_tolerance, report)
    writer = EventWriter(store)
    total = path.stat().st_size
    with path.open("rb") as handle:
        batch: list[tuple[Any, ...]] = []
        rejected_before = 0
        for number, record, raw in _records(path, file_format, handle):
            row = validator.row(number, record, raw)
            if row is not None:
                batch.append(row)
            if len(batch) >= BATCH_SIZE:
                rejected_before = _flush(writer, batch, report, rejected_before)
                batch = []
                if progress:
                    progress(handle.tell() if file_format != "parquet" else 0, total)
        _flush(writer, batch, report, rejected_before)
    if progress:
        progress(total, total)
    log.info(
        "imported %s: %d events, %d rejected, %d duplicates",
        path, report.imported, report.rejected, report.duplicates,
    )
    return report


def _flush(writer: EventWriter, batch: list[tuple[Any, ...]], report: ImportReport, rejected_before: int) -> int:
    result = writer.write(batch, rejected=report.rejected - rejected_before)
    report.imported += result.inserted
    report.duplicates += result.duplicates
    return report.rejected
