"""The ingest log: files where the server makes request events durable before DuckDB stores them.

The log is a folder next to the store file, ``<store>.ingest/``, holding segment
files named by the number of their first record (``00000000000000000001.log``).
A segment is a run of records, each a 24-byte little-endian header and a payload::

    magic b"USL2" | record number (u64) | rejected messages (u32) | payload bytes (u32)
    | CRC-32 of the three numbers and the payload (u32) | requests as MessagePack

The payload is a MessagePack array of ``RequestEntry``: each acknowledged
request's JSON body with what building its rows takes (receipt time, source,
whether every message passed ``accept``). The loader builds the rows, so
the server's event loop does no more per message than deciding it is valid.

Record numbers rise by one across segments. One record contains every request that
the log thread took in one pass, and the thread calls ``fdatasync`` once per record,
so the server acknowledges those requests only after the sync returns. A record cut
short or with a wrong CRC-32 at the end of the last segment is the remains of an
append that a crash interrupted before its sync, so no request in it was
acknowledged. ``read_records`` stops there. Anywhere else it is damage and raises.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from upsignal.errors import StoreError
from upsignal.server.ingest import RequestEntry

log = logging.getLogger(__name__)

MAGIC = b"USL2"
HEADER = struct.Struct("<4sQIII")
SEGMENT_SUFFIX = ".log"
# A new segment starts once the current one is this large, so loaded records can be deleted a file at a time.
DEFAULT_SEGMENT_BYTES = 64 * 1024 * 1024

# Log folders that an IngestLogWriter of this process has open. DuckDB shares one database between the
# connections a process opens to a file, so only this set keeps a second Store of the same process
# from loading and deleting the segments that the writer is still appending to.
_open_directories: set[Path] = set()
_open_directories_lock = threading.Lock()


class LogWriteError(Exception):
    """An append or sync of the ingest log failed; the records it carried were not acknowledged."""


@dataclass
class LogRecord:
    """One record: the requests appended together, and their rejected-message count."""

    seq: int
    entries: list[RequestEntry]
    rejected: int


@dataclass(frozen=True)
class LogPosition:
    """The place of an appended record: its number, segment file and the offset of its header."""

    seq: int
    path: Path
    offset: int


_entries_decoder = msgspec.msgpack.Decoder(list[RequestEntry])


def encode_record(seq: int, entries: list[RequestEntry]) -> tuple[bytes, bytes]:
    """Return the header and the payload of one record."""
    payload = msgspec.msgpack.encode(entries)
    rejected = sum(entry.rejected for entry in entries)
    numbers = struct.pack("<QII", seq, rejected, len(payload))
    checksum = zlib.crc32(payload, zlib.crc32(numbers))
    return HEADER.pack(MAGIC, seq, rejected, len(payload), checksum), payload


def decode_entries(payload: bytes) -> list[RequestEntry]:
    return _entries_decoder.decode(payload)


def read_record_at(position: LogPosition) -> LogRecord:
    """Read back a record this process appended, as the loader does; raises StoreError if it changed."""
    with position.path.open("rb") as handle:
        handle.seek(position.offset)
        record, problem = _read_record(handle, position.path.stat().st_size - position.offset)
    if record is None or record[0] != position.seq:
        raise StoreError(f"ingest log record {position.seq} in {position.path} at byte {position.offset} cannot be"
                         f" read back: {problem or 'another record is there'}")
    seq, rejected, payload = record
    return LogRecord(seq, decode_entries(payload), rejected)


def is_open_in_this_process(directory: Path) -> bool:
    """Return whether an IngestLogWriter of this process is appending to the log in ``directory``."""
    with _open_directories_lock:
        return directory.resolve() in _open_directories


def segment_path(directory: Path, first_seq: int) -> Path:
    return directory / f"{first_seq:020d}{SEGMENT_SUFFIX}"


def list_segments(directory: Path) -> list[tuple[int, Path]]:
    """Return the segments of a log folder as (first record number, path), oldest first."""
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        stem = path.name.removesuffix(SEGMENT_SUFFIX)
        if path.name.endswith(SEGMENT_SUFFIX) and stem.isdigit():
            found.append((int(stem), path))
    return sorted(found)


def read_records(directory: Path, after_seq: int = 0) -> Iterator[LogRecord]:
    """Yield the records numbered above ``after_seq``, oldest first, stopping at a torn final record.

    Raises StoreError for a damaged record that is not at the end of the log, or
    for a gap in the record numbers, because acknowledged events may be missing.
    """
    segments = list_segments(directory)
    expected: int | None = None
    for index, (_, path) in enumerate(segments):
        is_last = index == len(segments) - 1
        for seq, rejected, payload in _segment_records(path, is_last):
            if expected is not None and seq != expected:
                raise StoreError(f"ingest log {directory}: record {expected} is missing (found {seq} next in"
                                 f" {path.name}); events acknowledged in it may be lost. Move the folder aside"
                                 " to open the store without it")
            expected = seq + 1
            if seq > after_seq:
                yield LogRecord(seq, decode_entries(payload), rejected)


def _segment_records(path: Path, is_last: bool) -> Iterator[tuple[int, int, bytes]]:
    """Yield (record number, rejected, payload) of each whole record of one segment file."""
    size = path.stat().st_size
    offset = 0
    with path.open("rb") as handle:
        while offset < size:
            record, problem = _read_record(handle, size - offset)
            if record is None:
                if not is_last:
                    raise StoreError(f"ingest log segment {path} is damaged at byte {offset} ({problem}) but is not"
                                     " the last segment; events acknowledged after it may be lost. Move the"
                                     " folder aside to open the store without it")
                log.warning("ingest log %s: ignoring its last %d bytes from byte %d (%s); a crash interrupted"
                            " this append before its sync, so none of its requests was acknowledged",
                            path, size - offset, offset, problem)
                return
            seq, rejected, payload = record
            offset += HEADER.size + len(payload)
            yield seq, rejected, payload


def _read_record(handle, remaining: int) -> tuple[tuple[int, int, bytes] | None, str]:
    """Read one record at the handle's position; return (None, problem) if it is torn or damaged."""
    header = handle.read(HEADER.size)
    if len(header) < HEADER.size:
        return None, "the header is cut short"
    magic, seq, rejected, length, checksum = HEADER.unpack(header)
    if magic != MAGIC:
        return None, "no record starts here"
    if length > remaining - HEADER.size:
        return None, "the payload is cut short"
    payload = handle.read(length)
    if zlib.crc32(payload, zlib.crc32(header[4:-4])) != checksum:
        return None, "the CRC-32 does not match"
    return (seq, rejected, payload), ""


class IngestLogWriter:
    """Appends records to the log's current segment and deletes segments once they are loaded.

    ``append`` is for one thread (the server's log thread); ``delete_loaded`` may
    run on another.
    """

    def __init__(self, directory: Path, next_seq: int, segment_bytes: int = DEFAULT_SEGMENT_BYTES):
        self.directory = directory
        self.next_seq = next_seq
        self.segment_bytes = segment_bytes
        self._lock = threading.Lock()
        self._segments: list[tuple[int, Path]] = []
        self._fd = -1
        self._path = directory
        self._size = 0
        self._broken = False
        directory.mkdir(parents=True, exist_ok=True)
        if list_segments(directory):
            raise StoreError(f"ingest log {directory} still has segments; open the store first, which loads them")
        with _open_directories_lock:
            if directory.resolve() in _open_directories:
                raise StoreError(f"ingest log {directory} is already open in this process")
            _open_directories.add(directory.resolve())
        try:
            self._open_segment()
        except OSError:
            with _open_directories_lock:
                _open_directories.discard(directory.resolve())
            raise

    def append(self, entries: list[RequestEntry]) -> LogPosition:
        """Write one record and sync it to disk; return its number and place.

        Raises LogWriteError if the write or the sync fails. A failed write is cut
        off the file again, so later records still follow a whole one. When that
        is impossible, or the sync failed, the writer refuses every later append,
        because the file's contents on disk are then unknown.
        """
        if self._broken:
            raise LogWriteError("an earlier write to the ingest log failed; restart the server")
        seq = self.next_seq
        position = LogPosition(seq, self._path, self._size)
        header, payload = encode_record(seq, entries)
        try:
            _write_all(self._fd, header, payload)
        except OSError as error:
            self._cut_back(error)
            raise LogWriteError(f"writing to the ingest log failed: {error}") from error
        try:
            os.fdatasync(self._fd)
        except OSError as error:
            self._broken = True
            raise LogWriteError(f"syncing the ingest log failed: {error}; restart the server") from error
        self._size += len(header) + len(payload)
        self.next_seq = seq + 1
        if self._size >= self.segment_bytes:
            self._rotate()
        return position

    def delete_loaded(self, loaded_seq: int) -> None:
        """Delete every finished segment whose records are all numbered ``loaded_seq`` or below."""
        with self._lock:
            while len(self._segments) > 1 and self._segments[1][0] <= loaded_seq + 1:
                _, path = self._segments.pop(0)
                path.unlink()

    def close(self, loaded_seq: int) -> None:
        """Close the current segment and delete every segment if all records are loaded."""
        try:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            with self._lock:
                while self._segments and loaded_seq >= self.next_seq - 1:
                    _, path = self._segments.pop(0)
                    path.unlink()
        finally:
            with _open_directories_lock:
                _open_directories.discard(self.directory.resolve())

    def _open_segment(self) -> None:
        path = segment_path(self.directory, self.next_seq)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        self._path = path
        self._size = 0
        _sync_directory(self.directory)
        with self._lock:
            self._segments.append((self.next_seq, path))

    def _rotate(self) -> None:
        os.close(self._fd)
        self._fd = -1
        try:
            self._open_segment()
        except OSError as error:
            self._broken = True
            log.error("starting ingest log segment %d failed: %s", self.next_seq, error)

    def _cut_back(self, error: OSError) -> None:
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as cut_error:
            self._broken = True
            log.error("removing a failed ingest log append failed (%s) after: %s", cut_error, error)


def _write_all(fd: int, header: bytes, payload: bytes) -> None:
    written = os.writev(fd, [header, payload])
    rest = memoryview(header + payload)[written:] if written < len(header) + len(payload) else b""
    while rest:
        rest = rest[os.write(fd, rest):]


def _sync_directory(directory: Path) -> None:
    """Sync a folder so that a file just created in it survives a power loss."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
