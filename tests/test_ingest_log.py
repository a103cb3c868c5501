"""The ingest log: record format, torn and damaged records, segment deletion, loading at open, backpressure."""

from __future__ import annotations

import asyncio
import errno
import logging
import random
import threading
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from upsignal.errors import StoreError
from upsignal.server import ingest_log
from upsignal.server import writer as writer_module
from upsignal.server.ingest import RequestEntry, prepare_events
from upsignal.server.ingest_log import (
    HEADER,
    IngestLogWriter,
    LogRecord,
    LogWriteError,
    list_segments,
    read_records,
)
from upsignal.server.loader import records_table, touched_identities
from upsignal.server.testing import batch_entry
from upsignal.server.writer import GroupCommitWriter, WriterUnavailable
from upsignal.store import Store
from upsignal.store.database import ingest_log_dir

RECEIVED_AT = datetime(2024, 3, 29)

# The statement the ingest writer ran before touched identities were computed with Arrow; it defines them.
TOUCHED_SQL = """
SELECT DISTINCT kind, value FROM (
  SELECT 'user_key' AS kind, COALESCE(user_id, 'anon:' || anonymous_id) AS value FROM incoming
  UNION ALL
  SELECT 'user_key', 'anon:' || anonymous_id FROM incoming WHERE user_id IS NOT NULL AND anonymous_id IS NOT NULL
  UNION ALL
  SELECT 'user_key', previous_id FROM incoming WHERE type = 'alias' AND previous_id IS NOT NULL
  UNION ALL
  SELECT 'user_key', 'anon:' || previous_id FROM incoming WHERE type = 'alias' AND previous_id IS NOT NULL
  UNION ALL
  SELECT 'group', group_id FROM incoming WHERE type = 'group' AND group_id IS NOT NULL
)
WHERE value IS NOT NULL
ORDER BY ALL
"""


def events(*messages: dict) -> pa.Table:
    prepared = prepare_events(list(messages), RECEIVED_AT, timedelta(hours=1), "test")
    assert prepared.rejections == []
    return prepared.table


def tracks(prefix: str, count: int, user: str = "ann") -> RequestEntry:
    return batch_entry([{"type": "track", "event": "Report Run", "userId": user, "messageId": f"{prefix}-{i}",
                         "timestamp": "2024-03-20T10:00:00Z"} for i in range(count)], RECEIVED_AT)


def with_invalid(entry: RequestEntry, count: int) -> RequestEntry:
    """The entry of the same request with ``count`` more messages, each missing its userId."""
    body = orjson.loads(entry.body)
    body["batch"] += [{"type": "track", "event": "E", "messageId": f"bad-{i}"} for i in range(count)]
    return batch_entry(body["batch"], RECEIVED_AT)


def message_ids(record: LogRecord) -> list[str]:
    return records_table([record])[0].column("message_id").to_pylist()


def random_message(rng: random.Random, number: int) -> dict:
    """One message over id sets large enough that many identities come from a single message."""
    kind = rng.choice(["track", "identify", "group", "alias", "page"])
    message = {"type": kind, "messageId": f"m{number}", "timestamp": "2024-03-20T10:00:00Z"}
    if kind == "alias":
        return {**message, "previousId": f"p{rng.randint(1, 30)}", "userId": f"u{rng.randint(1, 30)}"}
    if rng.random() < 0.6:
        message["userId"] = f"u{rng.randint(1, 30)}"
    if rng.random() < 0.5 or "userId" not in message:
        message["anonymousId"] = f"a{rng.randint(1, 30)}"
    if kind == "track":
        message["event"] = "Report Run"
        if rng.random() < 0.3:
            message["context"] = {"groupId": f"c{rng.randint(1, 30)}"}
    if kind == "group":
        message["groupId"] = f"g{rng.randint(1, 30)}"
    return message


@pytest.fixture
def log_dir(tmp_path) -> Path:
    return tmp_path / "store.duckdb.ingest"


def write_log(directory: Path, *entries: RequestEntry, segment_bytes: int = 1 << 26,
              first_seq: int = 1) -> IngestLogWriter:
    """Append one record per entry and close the log as a crash would leave it: nothing marked loaded."""
    log_writer = IngestLogWriter(directory, first_seq, segment_bytes)
    for entry in entries:
        log_writer.append([entry])
    log_writer.close(loaded_seq=0)
    return log_writer


def store_counts(path: Path) -> dict[str, int]:
    with Store(path, read_only=True) as store:
        return {
            "events": store.scalar("SELECT count(*) FROM events"),
            "duplicates": store.scalar("SELECT value FROM ingest_counters WHERE name = 'duplicates'"),
            "rejected": store.scalar("SELECT value FROM ingest_counters WHERE name = 'rejected'"),
            "loaded_seq": store.scalar("SELECT loaded_seq FROM ingest_log_state"),
            "touched": store.scalar("SELECT count(*) FROM live_touched"),
        }


# -- record format ----------------------------------------------------------------------------------


def test_records_read_back_in_order(log_dir):
    first, second = tracks("a", 3), with_invalid(tracks("b", 2), 4)
    write_log(log_dir, first, second)

    records = list(read_records(log_dir))

    assert [record.seq for record in records] == [1, 2]
    assert records[0].entries == [first]
    assert records[1].entries == [second]
    assert message_ids(records[1]) == ["b-0", "b-1"]
    assert [record.rejected for record in records] == [0, 4]


def test_records_at_or_below_position_are_skipped(log_dir):
    write_log(log_dir, tracks("a", 1), tracks("b", 1), tracks("c", 1))
    assert [record.seq for record in read_records(log_dir, after_seq=2)] == [3]


@pytest.mark.parametrize("cut", [1, HEADER.size - 1, HEADER.size, HEADER.size + 10, "all-but-one"])
def test_torn_final_record_is_ignored(log_dir, cut, caplog):
    write_log(log_dir, tracks("a", 2), tracks("b", 2), tracks("c", 2))
    (_, segment), = list_segments(log_dir)
    data = segment.read_bytes()
    last_start = len(data) - _last_record_size(data)
    keep = len(data) - 1 if cut == "all-but-one" else last_start + cut
    segment.write_bytes(data[:keep])

    with caplog.at_level(logging.WARNING):
        records = list(read_records(log_dir))

    assert [record.seq for record in records] == [1, 2]
    assert "ignoring its last" in caplog.text


def test_changed_byte_in_final_record_is_ignored(log_dir):
    write_log(log_dir, tracks("a", 2), tracks("b", 2))
    (_, segment), = list_segments(log_dir)
    data = bytearray(segment.read_bytes())
    data[-5] ^= 0xFF
    segment.write_bytes(bytes(data))

    assert [record.seq for record in read_records(log_dir)] == [1]


def test_damage_before_last_segment_raises(log_dir):
    write_log(log_dir, tracks("a", 2), tracks("b", 2), tracks("c", 2), segment_bytes=1)
    segments = list_segments(log_dir)
    assert len(segments) == 4  # one per record, then the empty segment the writer opened last
    first = segments[0][1]
    data = bytearray(first.read_bytes())
    data[HEADER.size + 8] ^= 0xFF
    first.write_bytes(bytes(data))

    with pytest.raises(StoreError, match="damaged at byte 0"):
        list(read_records(log_dir))


def test_missing_record_raises(log_dir):
    write_log(log_dir, tracks("a", 2), tracks("b", 2), tracks("c", 2), segment_bytes=1)
    list_segments(log_dir)[1][1].unlink()

    with pytest.raises(StoreError, match="record 2 is missing"):
        list(read_records(log_dir))


def test_loaded_segments_are_deleted(log_dir):
    log_writer = IngestLogWriter(log_dir, 1, segment_bytes=1)
    for prefix in "abcd":
        log_writer.append([tracks(prefix, 1)])
    assert [seq for seq, _ in list_segments(log_dir)] == [1, 2, 3, 4, 5]

    log_writer.delete_loaded(2)
    assert [seq for seq, _ in list_segments(log_dir)] == [3, 4, 5]

    log_writer.close(loaded_seq=4)
    assert list_segments(log_dir) == []


def test_failed_write_is_cut_off(log_dir, monkeypatch):
    log_writer = IngestLogWriter(log_dir, 1)
    log_writer.append([tracks("a", 2)])
    real_write_all = ingest_log._write_all

    def write_half_then_fail(fd: int, header: bytes, payload: bytes) -> None:
        real_write_all(fd, header, payload[:len(payload) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ingest_log, "_write_all", write_half_then_fail)
    with pytest.raises(LogWriteError, match="No space left"):
        log_writer.append([tracks("b", 2)])
    monkeypatch.setattr(ingest_log, "_write_all", real_write_all)
    assert log_writer.append([tracks("c", 2)]).seq == 2
    log_writer.close(loaded_seq=0)

    records = list(read_records(log_dir))
    assert [record.seq for record in records] == [1, 2]
    assert message_ids(records[1]) == ["c-0", "c-1"]


def test_short_write_is_completed(log_dir, monkeypatch):
    real_write = ingest_log.os.write
    monkeypatch.setattr(ingest_log.os, "writev", lambda fd, parts: real_write(fd, bytes(parts[0])[:10]))
    write_log(log_dir, tracks("a", 3), tracks("b", 1))
    monkeypatch.undo()

    assert [len(message_ids(record)) for record in read_records(log_dir)] == [3, 1]


def test_failed_sync_stops_appends(log_dir, monkeypatch):
    log_writer = IngestLogWriter(log_dir, 1)

    def fail_sync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(ingest_log.os, "fdatasync", fail_sync)
    with pytest.raises(LogWriteError, match="syncing the ingest log failed"):
        log_writer.append([tracks("a", 1)])
    monkeypatch.undo()
    with pytest.raises(LogWriteError, match="restart the server"):
        log_writer.append([tracks("b", 1)])
    log_writer.close(loaded_seq=0)


# -- touched identities -------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_touched_identities_match_sql(seed):
    import duckdb

    rng = random.Random(seed)
    table = events(*[random_message(rng, number) for number in range(60)])
    conn = duckdb.connect()
    conn.register("incoming", table)

    expected = conn.execute(TOUCHED_SQL).fetchall()
    found = sorted(touched_identities(table).to_pylist(), key=lambda row: (row["kind"], row["value"]))

    assert [(row["kind"], row["value"]) for row in found] == expected


def test_touched_identities_of_each_message_type():
    table = events(
        {"type": "track", "event": "E", "userId": "u1", "anonymousId": "a1", "messageId": "1",
         "context": {"groupId": "c1"}},
        {"type": "page", "anonymousId": "a2", "messageId": "2"},
        {"type": "alias", "userId": "u2", "previousId": "p1", "messageId": "3"},
        {"type": "group", "userId": "u1", "groupId": "g1", "messageId": "4"},
    )

    found = {(row["kind"], row["value"]) for row in touched_identities(table).to_pylist()}

    assert found == {("user_key", "u1"), ("user_key", "anon:a1"), ("user_key", "anon:a2"), ("user_key", "u2"),
                     ("user_key", "p1"), ("user_key", "anon:p1"), ("group", "g1")}


# -- loading at open ---------------------------------------------------------------------------------


def test_writable_open_loads_pending_log(tmp_path):
    path = tmp_path / "store.duckdb"
    Store(path).close()
    write_log(ingest_log_dir(str(path)), tracks("a", 3), with_invalid(tracks("b", 2), 2))

    with Store(path) as store:
        assert store.scalar("SELECT count(*) FROM events") == 5
    counts = store_counts(path)

    assert counts == {"events": 5, "duplicates": 0, "rejected": 2, "loaded_seq": 2, "touched": 1}
    assert list_segments(ingest_log_dir(str(path))) == []


def test_read_only_open_loads_pending_log(tmp_path):
    path = tmp_path / "store.duckdb"
    Store(path).close()
    write_log(ingest_log_dir(str(path)), tracks("a", 3))

    with Store(path, read_only=True) as store:
        assert store.scalar("SELECT count(*) FROM events") == 3
    assert list_segments(ingest_log_dir(str(path))) == []


def test_open_skips_records_already_loaded(tmp_path):
    """A crash after the load committed but before its segment was deleted must not count anything twice."""
    path = tmp_path / "store.duckdb"
    with Store(path) as store:
        store.conn.execute("UPDATE ingest_log_state SET loaded_seq = 7")
    write_log(ingest_log_dir(str(path)), tracks("a", 2), tracks("b", 2), tracks("c", 2), first_seq=6)

    counts = store_counts(path)

    assert counts["events"] == 2
    assert counts["duplicates"] == 0
    assert counts["loaded_seq"] == 8


def test_open_loads_only_whole_records(tmp_path):
    path = tmp_path / "store.duckdb"
    Store(path).close()
    write_log(ingest_log_dir(str(path)), tracks("a", 2), tracks("b", 2))
    (_, segment), = list_segments(ingest_log_dir(str(path)))
    segment.write_bytes(segment.read_bytes()[:-3])

    counts = store_counts(path)

    assert counts["events"] == 2
    assert counts["loaded_seq"] == 1


def test_log_newer_than_store_raises(tmp_path):
    path = tmp_path / "store.duckdb"
    Store(path).close()
    write_log(ingest_log_dir(str(path)), tracks("a", 2), first_seq=5)

    with pytest.raises(StoreError, match="records between are missing"):
        Store(path)


# -- writer ------------------------------------------------------------------------------------------


def test_acknowledged_before_load_and_loaded_later(tmp_path, monkeypatch):
    release = threading.Event()
    real_load = writer_module.store_events

    def held_load(*args):
        release.wait(30)
        return real_load(*args)

    monkeypatch.setattr(writer_module, "store_events", held_load)
    with Store(tmp_path / "store.duckdb") as store:
        group_writer = GroupCommitWriter(store)
        group_writer.start()
        try:
            asyncio.run(group_writer.write(tracks("a", 4)))
            assert group_writer.unloaded_rows == 4
            assert store.scalar("SELECT count(*) FROM events") == 0
            assert len(list(read_records(ingest_log_dir(store.path)))) == 1

            release.set()
            assert group_writer.wait_loaded(timeout=30)
            assert store.scalar("SELECT count(*) FROM events") == 4
            assert group_writer.unloaded_rows == 0
        finally:
            release.set()
            group_writer.stop()
        assert list_segments(ingest_log_dir(store.path)) == []


def test_writer_over_backlog_bound_is_unavailable(tmp_path, monkeypatch):
    release = threading.Event()
    real_load = writer_module.store_events

    def held_load(*args):
        release.wait(30)
        return real_load(*args)

    monkeypatch.setattr(writer_module, "store_events", held_load)
    with Store(tmp_path / "store.duckdb") as store:
        first = tracks("a", 50)
        group_writer = GroupCommitWriter(store, max_unloaded_bytes=len(first.body) + 1)
        group_writer.start()
        try:
            asyncio.run(group_writer.write(first))
            with pytest.raises(WriterUnavailable, match="50 events behind") as raised:
                asyncio.run(group_writer.write(tracks("b", 50)))
            assert raised.value.retry_after >= 1

            release.set()
            assert group_writer.wait_loaded(timeout=30)
            asyncio.run(group_writer.write(tracks("c", 50)))
            assert group_writer.wait_loaded(timeout=30)
        finally:
            release.set()
            group_writer.stop()
        ids = {row[0][0] for row in store.conn.execute("SELECT message_id FROM events").fetchall()}
    assert ids == {"a", "c"}


def test_stopped_writer_keeps_unloaded_records(tmp_path, monkeypatch):
    def failing_load(*args):
        raise StoreError("the disk is full")

    monkeypatch.setattr(writer_module, "store_events", failing_load)
    path = tmp_path / "store.duckdb"
    with Store(path) as store:
        group_writer = GroupCommitWriter(store)
        group_writer.start()
        asyncio.run(group_writer.write(tracks("a", 3)))
        group_writer.stop(timeout=1)
    monkeypatch.undo()

    assert store_counts(path)["events"] == 3


def _last_record_size(data: bytes) -> int:
    """Return the byte size of the last record in a segment's bytes."""
    offset, size = 0, 0
    while offset < len(data):
        size = HEADER.size + HEADER.unpack_from(data, offset)[3]
        offset += size
    return size


def test_loads_continue_after_builder_dies(tmp_path, caplog):
    import psutil

    with Store(tmp_path / "store.duckdb") as store:
        group_writer = GroupCommitWriter(store)
        group_writer.start()
        try:
            asyncio.run(group_writer.write(tracks("a", 3)))
            assert group_writer.wait_loaded(timeout=60)
            builders = [child for child in psutil.Process().children()
                        if "spawn_main" in " ".join(child.cmdline())]
            assert builders
            for builder in builders:
                builder.kill()
            asyncio.run(group_writer.write(tracks("b", 3)))
            assert group_writer.wait_loaded(timeout=60)
            assert store.scalar("SELECT count(*) FROM events") == 6
        finally:
            group_writer.stop()
    assert "row builder process died" in caplog.text
