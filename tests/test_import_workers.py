"""Import through worker processes and across block boundaries gives the same result as one process."""

from __future__ import annotations

import pytest

import upsignal.events.importers as importers
from tests.conftest import write_jsonl


def _lines() -> list[bytes | dict]:
    lines: list[bytes | dict] = [
        {"type": "track", "userId": f"u{i % 7}", "event": "Report Run", "messageId": f"m{i}",
         "timestamp": f"2024-01-01T00:00:{i % 60:02d}Z"}
        for i in range(400)
    ]
    lines[10] = b'{"type": "track", broken'
    lines[150] = b"\xff\xfe not utf-8"
    lines[151] = b""
    lines[399] = lines[5]  # a duplicate messageId
    return lines


@pytest.mark.parametrize("workers", [1, 2])
def test_small_blocks_keep_line_numbers(store, tmp_path, monkeypatch, workers):
    monkeypatch.setattr(importers, "BLOCK_BYTES", 1000)
    path = write_jsonl(tmp_path / "events.jsonl", *_lines())

    report = importers.import_file(store, path, workers=workers)

    assert (report.imported, report.rejected, report.duplicates) == (396, 2, 1)
    assert [error.line for error in report.errors] == [11, 151]
    assert report.errors[0].raw == '{"type": "track", broken'
    assert "not valid UTF-8" in report.errors[1].message
    assert store.scalar("SELECT count(*) FROM events") == 396


def test_file_without_final_newline_imports_last_line(store, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_bytes(b'{"type":"track","userId":"u","event":"E","timestamp":"2024-01-01T00:00:00Z"}')

    report = importers.import_file(store, path)

    assert report.imported == 1


def test_non_object_properties_are_rejected_with_field(store, tmp_path):
    path = write_jsonl(tmp_path / "events.jsonl",
                       {"type": "track", "userId": "u", "event": "E", "timestamp": "2024-01-01T00:00:00Z",
                        "properties": ["not", "an", "object"]})

    report = importers.import_file(store, path)

    assert report.rejected == 1
    assert report.errors[0].field == "properties"
    assert "must be a JSON object, got list" in report.errors[0].message


def test_small_and_large_batches_build_same_table():
    from datetime import datetime

    from upsignal.events.writer import rows_to_table

    row = ("m", "track", "E", None, "u", None, "g", None, datetime(2024, 1, 1), datetime(2024, 1, 1, 0, 0, 1),
           '{"a":1}', None, "{}", "s", False)

    small, large = rows_to_table([row] * 2), rows_to_table([row] * 20)

    assert small.schema == large.schema
    assert small.to_pylist() == large.to_pylist()[:2]
