"""Importing events from JSON lines, CSV and Parquet: validation, dedupe, timestamps, CLI exit codes."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import write_jsonl
from upsignal.cli import run_app
from upsignal.errors import ImportFileError
from upsignal.events.importers import import_file
from upsignal.events.mapping import Mapping, load_mapping
from upsignal.events.schema import MAX_EVENT_BYTES, deterministic_message_id
from upsignal.store import Store

CSV_MAPPING = {
    "constants": {"type": "track"},
    "fields": {
        "messageId": "id",
        "userId": "user",
        "event": "event",
        "timestamp": "ts",
        "properties.count": {"column": "count", "type": "integer"},
        "properties.amount": {"column": "amount", "type": "number"},
        "properties.trial": {"column": "trial", "type": "boolean"},
    },
}
CSV_HEADER = "id,user,event,ts,count,amount,trial\n"


def track(number: int, **extra) -> dict:
    return {
        "type": "track", "event": "Report Run", "userId": f"u{number}", "messageId": f"m{number}",
        "timestamp": "2024-03-01T10:00:00Z", **extra,
    }


def stored(store: Store, sql: str = "SELECT count(*) FROM events") -> object:
    return store.scalar(sql)


def timestamp_of(store: Store, message_id: str) -> datetime:
    return store.scalar("SELECT timestamp FROM events WHERE message_id = ?", [message_id])


def only_error(report):
    assert report.rejected == 1, [str(error) for error in report.errors]
    return report.errors[0]


@pytest.fixture
def csv_mapping() -> Mapping:
    return Mapping.model_validate(CSV_MAPPING)


def write_csv(path: Path, *rows: str) -> Path:
    path.write_text(CSV_HEADER + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


# -- JSON lines -----------------------------------------------------------------------


def test_jsonl_imports_all_types(store, tmp_path):
    path = write_jsonl(
        tmp_path / "events.jsonl",
        track(1),
        {"type": "identify", "userId": "u1", "traits": {"email": "a@acme.com"}, "timestamp": "2024-03-01T09:00:00Z"},
        {"type": "group", "userId": "u1", "groupId": "g1", "timestamp": "2024-03-01T09:00:00Z"},
        {"type": "alias", "userId": "u1", "previousId": "anon-1", "timestamp": "2024-03-01T09:00:00Z"},
        {"type": "page", "anonymousId": "anon-1", "name": "Pricing", "timestamp": "2024-03-01T08:00:00Z"},
        {"type": "screen", "userId": "u1", "name": "Home", "timestamp": "2024-03-01T08:00:00Z"},
    )
    report = import_file(store, path)
    assert (report.imported, report.rejected, report.duplicates) == (6, 0, 0)
    types = store.rows("SELECT type, count(*) AS n FROM events GROUP BY type")
    assert {row["type"] for row in types} == {"track", "identify", "group", "alias", "page", "screen"}


def test_jsonl_malformed_line_rejected(store, tmp_path):
    path = write_jsonl(tmp_path / "events.jsonl", track(1), '{"type": "track", "event": ', track(3))
    report = import_file(store, path)
    error = only_error(report)
    assert error.line == 2
    assert "invalid JSON" in error.message
    assert report.imported == 2
    assert stored(store) == 2


def test_jsonl_missing_user_ids_rejected(store, tmp_path):
    record = {"type": "track", "event": "Report Run", "timestamp": "2024-03-01T10:00:00Z"}
    path = write_jsonl(tmp_path / "events.jsonl", track(1), record)
    error = only_error(import_file(store, path))
    assert error.line == 2
    assert "userId or anonymousId is required" in error.message


def test_jsonl_empty_user_id_counts_as_missing(store, tmp_path):
    path = write_jsonl(tmp_path / "events.jsonl", track(1, userId=""))
    error = only_error(import_file(store, path))
    assert "userId or anonymousId is required" in error.message


def test_jsonl_unknown_type_rejected(store, tmp_path):
    path = write_jsonl(tmp_path / "events.jsonl", track(1), track(2, type="purchase"))
    error = only_error(import_file(store, path))
    assert error.line == 2
    assert error.field == "type"
    assert "'purchase'" in error.message


def test_jsonl_track_without_event_rejected(store, tmp_path):
    record = track(1)
    del record["event"]
    error = only_error(import_file(store, write_jsonl(tmp_path / "events.jsonl", record)))
    assert "event is required" in error.message


def test_jsonl_non_object_line_rejected(store, tmp_path):
    path = write_jsonl(tmp_path / "events.jsonl", "[1, 2, 3]", track(2))
    error = only_error(import_file(store, path))
    assert error.line == 1
    assert "JSON object" in error.message


def test_jsonl_future_timestamp_rejected(store, tmp_path):
    path = write_jsonl(tmp_path / "events.jsonl", track(1), track(2, timestamp="2999-01-01T00:00:00Z"))
    report = import_file(store, path)
    error = only_error(report)
    assert error.line == 2
    assert error.field == "timestamp"
    assert "2999-01-01" in error.message
    assert "in the future" in error.message
    assert report.imported == 1


def test_jsonl_missing_timestamp_rejected(store, tmp_path):
    record = track(1)
    del record["timestamp"]
    error = only_error(import_file(store, write_jsonl(tmp_path / "events.jsonl", record)))
    assert error.field == "timestamp"
    assert "missing" in error.message


def test_jsonl_invalid_timestamp_rejected(store, tmp_path):
    path = write_jsonl(tmp_path / "events.jsonl", track(1, timestamp="yesterday"))
    error = only_error(import_file(store, path))
    assert error.field == "timestamp"
    assert "'yesterday'" in error.message


def test_jsonl_oversized_event_rejected(store, tmp_path):
    big = track(2, properties={"notes": "x" * 40_000})
    path = write_jsonl(tmp_path / "events.jsonl", track(1), big, track(3))
    report = import_file(store, path)
    error = only_error(report)
    assert error.line == 2
    assert f"{MAX_EVENT_BYTES}-byte limit" in error.message
    assert re.match(r"event is 40\d{3} bytes", error.message)
    assert report.imported == 2


def test_jsonl_latin1_file_rejected(store, tmp_path):
    path = tmp_path / "latin1.jsonl"
    lines = [json.dumps(track(n, event="Café ouvert"), ensure_ascii=False) for n in (1, 2)]
    path.write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    report = import_file(store, path)
    assert report.imported == 0
    assert report.rejected == 2
    assert [error.line for error in report.errors] == [1, 2]
    assert all("not valid UTF-8 (byte 0xe9" in error.message for error in report.errors)


def test_jsonl_utf16_file_rejected(store, tmp_path):
    path = tmp_path / "utf16.jsonl"
    path.write_text(json.dumps(track(1)) + "\n", encoding="utf-16")
    report = import_file(store, path)
    assert report.imported == 0
    assert "not valid UTF-8" in report.errors[0].message


def test_jsonl_bad_utf8_line_in_good_file(store, tmp_path):
    bad_line = json.dumps(track(2, event="Caf\u00e9"), ensure_ascii=False).encode("latin-1")
    path = write_jsonl(tmp_path / "events.jsonl", track(1), bad_line, track(3))
    report = import_file(store, path)
    error = only_error(report)
    assert error.line == 2
    assert "not valid UTF-8" in error.message
    assert stored(store, "SELECT string_agg(message_id, ',' ORDER BY message_id) FROM events") == "m1,m3"


def test_jsonl_blank_lines_keep_numbering(store, tmp_path):
    path = write_jsonl(tmp_path / "events.jsonl", track(1), "", "   ", track(4, type="bogus"))
    report = import_file(store, path)
    assert only_error(report).line == 4
    assert report.imported == 1


def test_jsonl_crlf_and_bom_accepted(store, tmp_path):
    path = tmp_path / "windows.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(track(1)).encode() + b"\r\n" + json.dumps(track(2)).encode() + b"\r\n")
    report = import_file(store, path)
    assert (report.imported, report.rejected) == (2, 0)


def test_jsonl_no_trailing_newline(store, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(track(1)) + "\n" + json.dumps(track(2)))
    assert import_file(store, path).imported == 2


def test_bad_file_keeps_earlier_imports(store, tmp_path):
    import_file(store, write_jsonl(tmp_path / "good.jsonl", track(1), track(2)))
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\xff\xfe garbage\n{not json}\n")
    report = import_file(store, bad)
    assert report.rejected == 2
    assert stored(store) == 2


def test_damaged_parquet_keeps_earlier_imports(store, tmp_path, csv_mapping):
    import_file(store, write_jsonl(tmp_path / "good.jsonl", track(1)))
    damaged = tmp_path / "damaged.parquet"
    damaged.write_bytes(b"PAR1 this is not a parquet file")
    with pytest.raises(ImportFileError, match="cannot read .* as Parquet"):
        import_file(store, damaged, mapping=csv_mapping)
    assert stored(store) == 1


# -- dedupe ----------------------------------------------------------------------------


def test_same_file_twice_stored_once(store, tmp_path):
    path = write_jsonl(tmp_path / "events.jsonl", track(1), track(2), track(3))
    first = import_file(store, path)
    second = import_file(store, path)
    assert (first.imported, first.duplicates) == (3, 0)
    assert (second.imported, second.duplicates) == (0, 3)
    assert stored(store) == 3


def test_repeated_message_id_in_file(store, tmp_path):
    path = write_jsonl(tmp_path / "events.jsonl", track(1), track(1, event="Other"), track(2))
    report = import_file(store, path)
    assert (report.imported, report.duplicates) == (2, 1)


def test_counters_record_rejects_and_duplicates(store, tmp_path):
    path = write_jsonl(tmp_path / "events.jsonl", track(1), "{oops", track(1))
    import_file(store, path)
    counters = {row["name"]: row["value"] for row in store.rows("SELECT name, value FROM ingest_counters")}
    assert counters == {"rejected": 1, "duplicates": 1}


def test_missing_message_id_is_deterministic(store, tmp_path):
    record = track(1)
    del record["messageId"]
    path = write_jsonl(tmp_path / "events.jsonl", record)
    import_file(store, path)
    assert stored(store, "SELECT message_id FROM events") == deterministic_message_id(record)


def test_missing_message_id_reimport_dedupes(store, tmp_path):
    records = [{key: value for key, value in track(n).items() if key != "messageId"} for n in (1, 2)]
    path = write_jsonl(tmp_path / "events.jsonl", *records)
    import_file(store, path)
    again = import_file(store, path)
    assert (again.imported, again.duplicates) == (0, 2)
    assert stored(store) == 2


def test_content_id_ignores_key_order():
    record = {"type": "track", "event": "A", "userId": "u1", "timestamp": "2024-03-01T00:00:00Z"}
    reordered = dict(reversed(list(record.items())))
    assert deterministic_message_id(record) == deterministic_message_id(reordered)


def test_content_id_differs_by_content():
    record = {"type": "track", "event": "A", "userId": "u1", "timestamp": "2024-03-01T00:00:00Z"}
    assert deterministic_message_id(record) != deterministic_message_id({**record, "event": "B"})


# -- timestamps ------------------------------------------------------------------------

TIMESTAMP_CASES = [
    ("2024-03-01T10:00:00Z", datetime(2024, 3, 1, 10, 0)),
    ("2024-03-01T10:00:00+00:00", datetime(2024, 3, 1, 10, 0)),
    ("2024-03-01T15:30:00+05:30", datetime(2024, 3, 1, 10, 0)),
    ("2024-03-01T02:00:00-08:00", datetime(2024, 3, 1, 10, 0)),
    ("2024-03-01T10:00:00.250Z", datetime(2024, 3, 1, 10, 0, 0, 250_000)),
    ("2024-03-01T10:00:00", datetime(2024, 3, 1, 10, 0)),
    ("2024-03-01 10:00:00", datetime(2024, 3, 1, 10, 0)),
    (1709287200, datetime(2024, 3, 1, 10, 0)),
    (1709287200.5, datetime(2024, 3, 1, 10, 0, 0, 500_000)),
    ("1709287200", datetime(2024, 3, 1, 10, 0)),
    (1709287200123, datetime(2024, 3, 1, 10, 0, 0, 123_000)),
    ("1709287200123", datetime(2024, 3, 1, 10, 0, 0, 123_000)),
]


@pytest.mark.parametrize(("given", "expected"), TIMESTAMP_CASES, ids=[str(case[0]) for case in TIMESTAMP_CASES])
def test_timestamp_stored_as_utc(store, tmp_path, given, expected):
    import_file(store, write_jsonl(tmp_path / "events.jsonl", track(1, timestamp=given)))
    assert timestamp_of(store, "m1") == expected


def test_original_timestamp_used_when_no_timestamp(store, tmp_path):
    record = track(1, originalTimestamp="2024-03-01T12:00:00+02:00")
    del record["timestamp"]
    import_file(store, write_jsonl(tmp_path / "events.jsonl", record))
    assert timestamp_of(store, "m1") == datetime(2024, 3, 1, 10, 0)


def test_segment_export_timestamp_kept(store, tmp_path):
    # A message stored by Segment has all four timestamps, and its timestamp is already
    # corrected for device clock skew (Segment spec, common fields).
    record = track(
        1,
        timestamp="2024-03-01T10:00:00.000Z",
        originalTimestamp="2024-03-01T10:00:05.000Z",
        sentAt="2024-03-01T10:00:06.000Z",
        receivedAt="2024-03-01T10:00:01.000Z",
    )
    import_file(store, write_jsonl(tmp_path / "events.jsonl", record))
    assert timestamp_of(store, "m1") == datetime(2024, 3, 1, 10, 0)


def test_skew_corrected_by_own_received_at(store, tmp_path):
    # The device clock ran 5 minutes fast: it sent at 10:05 what the collector received at 10:00:01.
    record = track(
        1,
        originalTimestamp="2024-03-01T10:04:00Z",
        sentAt="2024-03-01T10:05:00Z",
        receivedAt="2024-03-01T10:00:01Z",
    )
    del record["timestamp"]
    import_file(store, write_jsonl(tmp_path / "events.jsonl", record))
    assert timestamp_of(store, "m1") == datetime(2024, 3, 1, 9, 59, 1)


# -- CSV -------------------------------------------------------------------------------


def test_csv_imports_typed_properties(store, tmp_path, csv_mapping):
    path = write_csv(tmp_path / "events.csv", "e1,u1,Report Run,2024-03-01T10:00:00Z,7,12.5,yes")
    report = import_file(store, path, mapping=csv_mapping)
    assert report.imported == 1
    properties = json.loads(stored(store, "SELECT properties FROM events"))
    assert properties == {"count": 7, "amount": 12.5, "trial": True}


def test_csv_empty_cells_left_out(store, tmp_path, csv_mapping):
    path = write_csv(tmp_path / "events.csv", "e1,u1,Report Run,2024-03-01T10:00:00Z,,,")
    import_file(store, path, mapping=csv_mapping)
    assert stored(store, "SELECT properties FROM events") is None


def test_csv_extra_cells_rejected(store, tmp_path, csv_mapping):
    path = write_csv(
        tmp_path / "events.csv",
        "e1,u1,A,2024-03-01T10:00:00Z,1,1,no",
        "e2,u2,B,2024-03-01T10:00:00Z,1,1,no,surplus",
        "e3,u3,C,2024-03-01T10:00:00Z,1,1,no",
    )
    report = import_file(store, path, mapping=csv_mapping)
    error = only_error(report)
    assert error.line == 3
    assert "more cells than the header's 7" in error.message
    assert report.imported == 2


def test_csv_bad_boolean_rejected(store, tmp_path, csv_mapping):
    path = write_csv(tmp_path / "events.csv", "e1,u1,A,2024-03-01T10:00:00Z,1,1,maybe")
    error = only_error(import_file(store, path, mapping=csv_mapping))
    assert error.line == 2
    assert error.field == "trial"
    assert error.message == "column 'trial': 'maybe' is not a valid boolean"


def test_csv_bad_number_rejected(store, tmp_path, csv_mapping):
    path = write_csv(tmp_path / "events.csv", "e1,u1,A,2024-03-01T10:00:00Z,1,twelve,no")
    error = only_error(import_file(store, path, mapping=csv_mapping))
    assert error.field == "amount"
    assert "'twelve' is not a valid number" in error.message


def test_csv_bad_integer_rejected(store, tmp_path, csv_mapping):
    path = write_csv(tmp_path / "events.csv", "e1,u1,A,2024-03-01T10:00:00Z,seven,1,no")
    error = only_error(import_file(store, path, mapping=csv_mapping))
    assert error.field == "count"
    assert "'seven' is not a valid integer" in error.message


def test_csv_line_numbers_after_multiline_cell(store, tmp_path, csv_mapping):
    path = write_csv(
        tmp_path / "events.csv",
        'e1,u1,"Report\nRun",2024-03-01T10:00:00Z,1,1,no',
        "e2,u2,B,2024-03-01T10:00:00Z,1,1,perhaps",
    )
    error = only_error(import_file(store, path, mapping=csv_mapping))
    assert error.line == 4


def test_csv_bad_utf8_row_rejected(store, tmp_path, csv_mapping):
    path = tmp_path / "events.csv"
    path.write_bytes(
        CSV_HEADER.encode()
        + b"e1,u1,A,2024-03-01T10:00:00Z,1,1,no\n"
        + b"e2,u2,Caf\xe9,2024-03-01T10:00:00Z,1,1,no\n"
    )
    report = import_file(store, path, mapping=csv_mapping)
    error = only_error(report)
    assert error.line == 3
    assert "not valid UTF-8" in error.message
    assert report.imported == 1


def test_csv_oversized_event_rejected(store, tmp_path, csv_mapping):
    path = write_csv(tmp_path / "events.csv", f"e1,u1,{'x' * 40_000},2024-03-01T10:00:00Z,1,1,no")
    error = only_error(import_file(store, path, mapping=csv_mapping))
    assert f"{MAX_EVENT_BYTES}-byte limit" in error.message


def test_csv_epoch_milliseconds_text(store, tmp_path, csv_mapping):
    path = write_csv(tmp_path / "events.csv", "e1,u1,A,1709287200123,1,1,no")
    import_file(store, path, mapping=csv_mapping)
    assert timestamp_of(store, "e1") == datetime(2024, 3, 1, 10, 0, 0, 123_000)


def test_csv_without_message_id_reimport_dedupes(store, tmp_path):
    mapping = Mapping.model_validate({
        "constants": {"type": "track"},
        "fields": {"userId": "user", "event": "event", "timestamp": "ts"},
    })
    path = write_csv(tmp_path / "events.csv", ",u1,A,2024-03-01T10:00:00Z,,,", ",u2,B,2024-03-01T10:00:00Z,,,")
    import_file(store, path, mapping=mapping)
    again = import_file(store, path, mapping=mapping)
    assert (again.imported, again.duplicates) == (0, 2)


def test_csv_needs_mapping(store, tmp_path):
    path = write_csv(tmp_path / "events.csv", "e1,u1,A,2024-03-01T10:00:00Z,1,1,no")
    with pytest.raises(ImportFileError, match="need a column mapping"):
        import_file(store, path)


# -- Parquet ---------------------------------------------------------------------------


def test_parquet_imports_through_mapping(store, tmp_path, csv_mapping):
    table = pa.table({
        "id": ["p1", "p2", "p3"],
        "user": ["u1", None, "u3"],
        "event": ["A", "B", "C"],
        "ts": pa.array(
            [datetime(2024, 3, 1, 10), datetime(2024, 3, 1, 11), datetime(2024, 3, 1, 12)],
            type=pa.timestamp("us", tz="Asia/Kolkata"),
        ),
        "count": pa.array([1, 2, 3], type=pa.int64()),
        "amount": [1.5, 2.5, 3.5],
        "trial": [True, False, True],
    })
    path = tmp_path / "events.parquet"
    pq.write_table(table, path)
    report = import_file(store, path, mapping=csv_mapping)
    error = only_error(report)
    assert error.line == 2
    assert "userId or anonymousId is required" in error.message
    assert report.imported == 2
    assert timestamp_of(store, "p1") == datetime(2024, 3, 1, 10)
    properties = json.loads(stored(store, "SELECT properties FROM events WHERE message_id = 'p3'"))
    assert properties == {"count": 3, "amount": 3.5, "trial": True}


def test_parquet_epoch_milliseconds_column(store, tmp_path):
    mapping = Mapping.model_validate({
        "constants": {"type": "track"},
        "fields": {"messageId": "id", "userId": "user", "event": "event", "timestamp": "ts"},
    })
    path = tmp_path / "events.parquet"
    pq.write_table(pa.table({"id": ["p1"], "user": ["u1"], "event": ["A"], "ts": [1709287200123]}), path)
    import_file(store, path, mapping=mapping)
    assert timestamp_of(store, "p1") == datetime(2024, 3, 1, 10, 0, 0, 123_000)


# -- files, mappings and formats --------------------------------------------------------


def test_unknown_extension_rejected(store, tmp_path):
    path = tmp_path / "events.txt"
    path.write_text(json.dumps(track(1)) + "\n")
    with pytest.raises(ImportFileError, match="pass --format jsonl, csv, tsv or parquet"):
        import_file(store, path)


def test_explicit_format_overrides_extension(store, tmp_path):
    path = tmp_path / "events.txt"
    path.write_text(json.dumps(track(1)) + "\n")
    assert import_file(store, path, file_format="jsonl").imported == 1


def test_missing_input_file(store, tmp_path):
    with pytest.raises(ImportFileError, match="input file not found"):
        import_file(store, tmp_path / "absent.jsonl")


def test_missing_mapping_file(tmp_path):
    with pytest.raises(ImportFileError, match="mapping file not found"):
        load_mapping(tmp_path / "absent.yaml")


def test_mapping_with_unknown_key(tmp_path):
    path = tmp_path / "mapping.yaml"
    path.write_text("fields: {userId: user}\ncolumns: {event: event}\n")
    with pytest.raises(ImportFileError, match="'columns'"):
        load_mapping(path)


def test_mapping_with_unknown_type(tmp_path):
    path = tmp_path / "mapping.yaml"
    path.write_text("fields:\n  properties.n: {column: n, type: decimal}\n")
    with pytest.raises(ImportFileError, match="mapping file .*mapping.yaml"):
        load_mapping(path)


def test_mapping_file_not_yaml(tmp_path):
    path = tmp_path / "mapping.yaml"
    path.write_text("fields: [unclosed\n")
    with pytest.raises(ImportFileError, match="not valid YAML"):
        load_mapping(path)


# -- CLI exit codes ---------------------------------------------------------------------


def run(*args: str) -> int:
    return run_app([*args])


def test_cli_import_ok(tmp_path, capsys):
    path = write_jsonl(tmp_path / "events.jsonl", track(1), "{oops")
    assert run("import", "--db", str(tmp_path / "s.duckdb"), "--json", str(path)) == 0
    result = json.loads(capsys.readouterr().out)
    report = result["files"][0]
    assert report["imported"] == 1
    assert report["rejected"] == 1
    assert report["errors"][0]["line"] == 2
    assert "invalid JSON" in report["errors"][0]["message"]
    assert result["users"] == 1


def test_cli_import_reports_duplicates(tmp_path, capsys):
    path = write_jsonl(tmp_path / "events.jsonl", track(1), track(2))
    db = str(tmp_path / "s.duckdb")
    run("import", "--db", db, str(path))
    capsys.readouterr()
    assert run("import", "--db", db, "--json", str(path)) == 0
    result = json.loads(capsys.readouterr().out)["files"][0]
    assert (result["imported"], result["duplicates"]) == (0, 2)


def test_cli_nothing_imported_fails(tmp_path):
    path = write_jsonl(tmp_path / "events.jsonl", "{oops", "[]")
    assert run("import", "--db", str(tmp_path / "s.duckdb"), str(path)) == 1


def test_cli_missing_file_fails(tmp_path, capsys):
    assert run("import", "--db", str(tmp_path / "s.duckdb"), str(tmp_path / "absent.jsonl")) == 1
    assert "input file not found" in capsys.readouterr().err


def test_cli_missing_mapping_fails(tmp_path, capsys):
    path = write_csv(tmp_path / "events.csv", "e1,u1,A,2024-03-01T10:00:00Z,1,1,no")
    code = run("import", "--db", str(tmp_path / "s.duckdb"), "--mapping", str(tmp_path / "absent.yaml"), str(path))
    assert code == 1
    assert "mapping file not found" in capsys.readouterr().err


def test_cli_unknown_format_is_usage_error(tmp_path):
    path = write_jsonl(tmp_path / "events.jsonl", track(1))
    assert run("import", "--db", str(tmp_path / "s.duckdb"), "--format", "xml", str(path)) == 2


def test_cli_unknown_option_is_usage_error(tmp_path):
    assert run("import", "--no-such-option", str(tmp_path / "x.jsonl")) == 2


def test_cli_bad_as_of_is_usage_error(tmp_path):
    assert run("score", "--db", str(tmp_path / "s.duckdb"), "--as-of", "last tuesday") == 2


def test_cli_stats_counts(tmp_path, capsys):
    path = write_jsonl(tmp_path / "events.jsonl", track(1), track(1), "{oops")
    db = str(tmp_path / "s.duckdb")
    run("import", "--db", db, str(path))
    capsys.readouterr()
    assert run("stats", "--db", db, "--json") == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats == {"events": 1, "users": 1, "accounts": 1, "rejected": 1, "duplicates": 1}
