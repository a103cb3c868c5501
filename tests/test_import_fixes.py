"""File import: clock skew without receivedAt, Parquet value types, mapping columns and types, TSV, interrupts."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import orjson
import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.conftest import write_jsonl
from upsignal.cli import run_app
from upsignal.errors import ImportFileError, InvalidEventError
from upsignal.events import importers
from upsignal.events.importers import import_file
from upsignal.events.mapping import Mapping, load_mapping
from upsignal.events.schema import event_timestamp, parse_message
from upsignal.events.workers import ordered_map
from upsignal.store import Store

SDK_RECORD = {
    "type": "track", "messageId": "s1", "userId": "s1", "event": "Report Run",
    "timestamp": "2024-02-28T10:00:00Z", "sentAt": "2024-02-28T10:00:05Z",
}
TRACK_MAPPING = {
    "constants": {"type": "track"},
    "fields": {"messageId": "id", "userId": "user", "event": "event", "timestamp": "ts"},
}


def timestamp_of(store: Store, message_id: str) -> datetime:
    return store.scalar("SELECT timestamp FROM events WHERE message_id = ?", [message_id])


def properties_of(store: Store, message_id: str) -> dict:
    return json.loads(store.scalar("SELECT properties FROM events WHERE message_id = ?", [message_id]))


def mapping_with(**fields) -> Mapping:
    return Mapping.model_validate({
        "constants": TRACK_MAPPING["constants"],
        "fields": {**TRACK_MAPPING["fields"], **fields},
    })


def write_csv(path: Path, header: list[str], *rows: list[str], delimiter: str = ",") -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# -- clock skew: sentAt without receivedAt ----------------------------------------------


def test_sent_at_alone_keeps_timestamp(store, tmp_path):
    import_file(store, write_jsonl(tmp_path / "sdk.jsonl", SDK_RECORD))

    assert timestamp_of(store, "s1") == datetime(2024, 2, 28, 10, 0)


def test_sent_at_alone_keeps_original_timestamp(store, tmp_path):
    record = {**SDK_RECORD, "originalTimestamp": SDK_RECORD["timestamp"]}
    del record["timestamp"]

    import_file(store, write_jsonl(tmp_path / "sdk.jsonl", record))

    assert timestamp_of(store, "s1") == datetime(2024, 2, 28, 10, 0)


def test_event_timestamp_corrects_skew_only_live():
    message = parse_message(SDK_RECORD)
    request_time = datetime(2024, 2, 28, 12, 0)

    assert event_timestamp(message, request_time) == (datetime(2024, 2, 28, 10, 0), False)
    assert event_timestamp(message, request_time, live=True) == (request_time - timedelta(seconds=5), False)


# -- Parquet value types ---------------------------------------------------------------


def test_parquet_decimal_and_time_columns_import(store, tmp_path):
    table = pa.table({
        "user": ["u1", "u2"],
        "event": ["Invoice Paid", "Invoice Paid"],
        "ts": pa.array([1709287200123456789, 1709290800000000000], type=pa.timestamp("ns")),
        "amount": pa.array([Decimal("12.50"), Decimal("0.10")], type=pa.decimal128(10, 2)),
        "seats": pa.array([Decimal(7), Decimal(10) ** 30], type=pa.decimal128(38, 0)),
        "signed_up": pa.array([datetime(2024, 1, 2, 3, 4, 5)] * 2, type=pa.timestamp("us", tz="UTC")),
        "renewal": pa.array([date(2025, 3, 1)] * 2, type=pa.date32()),
    })
    pq.write_table(table, tmp_path / "billing.parquet")
    mapping = Mapping.model_validate({
        "constants": {"type": "track"},
        "fields": {
            "userId": "user", "event": "event", "timestamp": "ts", "properties.amount": "amount",
            "properties.seats": "seats", "properties.signed_up": "signed_up", "properties.renewal": "renewal",
        },
    })

    report = import_file(store, tmp_path / "billing.parquet", mapping=mapping)

    assert (report.imported, report.rejected) == (2, 0)
    rows = store.rows("SELECT user_id, timestamp, properties FROM events ORDER BY user_id")
    assert rows[0]["timestamp"] == datetime(2024, 3, 1, 10, 0, 0, 123456)
    assert json.loads(rows[0]["properties"]) == {
        "amount": 12.5, "seats": 7, "signed_up": "2024-01-02T03:04:05Z", "renewal": "2025-03-01",
    }
    assert json.loads(rows[1]["properties"])["seats"] == 1e30


def test_parquet_unconvertible_value_rejected(store, tmp_path):
    table = pa.table({
        "id": ["p1", "p2"], "user": ["u1", "u2"], "event": ["A", "B"],
        "ts": ["2024-03-01T10:00:00Z"] * 2,
        "wait": pa.array([None, timedelta(seconds=90)], type=pa.duration("s")),
    })
    pq.write_table(table, tmp_path / "events.parquet")

    report = import_file(store, tmp_path / "events.parquet", mapping=mapping_with(**{"properties.wait": "wait"}))

    assert report.imported == 1
    assert report.rejected == 1
    assert report.errors[0].line == 2
    assert report.errors[0].field == "wait"
    assert report.errors[0].message.startswith("column 'wait': datetime.timedelta(seconds=90) cannot be stored")


@pytest.mark.parametrize("value", [Decimal("NaN"), Decimal("Infinity"), float("inf"), object()])
def test_mapping_rejects_value_without_json_form(value):
    mapping = Mapping.model_validate({"fields": {"properties.x": "x"}})

    with pytest.raises(InvalidEventError, match="column 'x'") as raised:
        mapping.apply({"x": value})

    assert raised.value.field == "x"


def test_mapping_leaves_out_nan_cell():
    mapping = Mapping.model_validate({"fields": {"properties.x": "x"}})

    assert mapping.apply({"x": float("nan")}) == {}


# -- mapped columns that do not exist ----------------------------------------------------


def test_csv_mapping_typo_names_missing_column(store, tmp_path):
    path = write_csv(tmp_path / "a.csv", ["id", "user", "ACTIVITY", "ts"], ["e1", "u1", "Report Run", "2024-03-01T10:00:00Z"])
    mapping = Mapping.model_validate({
        "constants": {"type": "track"},
        "fields": {"messageId": "id", "userId": "user", "event": "ACTIVTY", "timestamp": "ts"},
    })

    with pytest.raises(ImportFileError) as raised:
        import_file(store, path, mapping=mapping)

    assert str(raised.value) == (
        "mapping names column 'ACTIVTY', which a.csv does not have; its columns are: id, user, ACTIVITY, ts"
    )
    assert store.scalar("SELECT count(*) FROM events") == 0
    assert store.scalar("SELECT value FROM ingest_counters WHERE name = 'rejected'") == 0


def test_parquet_mapping_typo_names_missing_columns(store, tmp_path):
    pq.write_table(pa.table({"id": ["p1"], "user": ["u1"], "event": ["A"], "ts": ["2024-03-01T10:00:00Z"]}),
                   tmp_path / "b.parquet")

    with pytest.raises(ImportFileError, match=r"mapping names columns 'usr', 'plan', which b.parquet does not have"):
        import_file(store, tmp_path / "b.parquet", mapping=mapping_with(userId="usr", **{"properties.plan": "plan"}))


def test_jsonl_mapping_reads_dotted_path(store, tmp_path):
    path = write_jsonl(
        tmp_path / "foreign.jsonl",
        {"id": "f1", "user": {"id": "u-nested"}, "event": "A", "ts": "2024-03-01T10:00:00Z"},
        {"id": "f2", "user.id": "u-flat", "user": {"id": "u-nested"}, "event": "B", "ts": "2024-03-01T10:00:00Z"},
    )

    report = import_file(store, path, mapping=mapping_with(userId="user.id"))

    assert report.imported == 2
    assert store.scalar("SELECT user_id FROM events WHERE message_id = 'f1'") == "u-nested"
    assert store.scalar("SELECT user_id FROM events WHERE message_id = 'f2'") == "u-flat"


def test_parquet_mapping_reads_struct_field(store, tmp_path):
    table = pa.table({
        "id": ["p1"], "account": [{"id": "u1", "plan": "pro"}], "event": ["A"], "ts": ["2024-03-01T10:00:00Z"],
    })
    pq.write_table(table, tmp_path / "nested.parquet")

    report = import_file(store, tmp_path / "nested.parquet", mapping=mapping_with(userId="account.id"))

    assert report.imported == 1
    assert store.scalar("SELECT user_id FROM events") == "u1"


# -- mapping types ---------------------------------------------------------------------


def test_json_type_parses_cell(store, tmp_path):
    path = write_csv(
        tmp_path / "events.csv", ["id", "user", "event", "ts", "meta"],
        ["e1", "u1", "A", "2024-03-01T10:00:00Z", '{"plan": "pro", "seats": 3}'],
        ["e2", "u2", "B", "2024-03-01T10:00:00Z", "{plan: pro}"],
    )
    mapping = mapping_with(**{"properties.meta": {"column": "meta", "type": "json"}})

    report = import_file(store, path, mapping=mapping)

    assert properties_of(store, "e1") == {"meta": {"plan": "pro", "seats": 3}}
    assert report.rejected == 1
    assert report.errors[0].line == 3
    assert report.errors[0].field == "meta"
    assert report.errors[0].message == "column 'meta': '{plan: pro}' is not a valid json"


def test_string_type_converts_parquet_number(store, tmp_path):
    table = pa.table({"id": ["p1"], "user": ["u1"], "event": ["A"], "ts": ["2024-03-01T10:00:00Z"], "code": [42]})
    pq.write_table(table, tmp_path / "events.parquet")
    mapping = mapping_with(**{"properties.code": {"column": "code", "type": "string"}})

    import_file(store, tmp_path / "events.parquet", mapping=mapping)

    assert properties_of(store, "p1") == {"code": "42"}


@pytest.mark.parametrize(("cell", "expected"), [("3", 3), ("3.0", 3), (" 3 ", 3), ("-2", -2), ("3.7", None), ("1e30", None)])
def test_integer_type_on_csv_text(store, tmp_path, cell, expected):
    path = write_csv(tmp_path / "events.csv", ["id", "user", "event", "ts", "n"], ["e1", "u1", "A", "2024-03-01T10:00:00Z", cell])

    report = import_file(store, path, mapping=mapping_with(**{"properties.n": {"column": "n", "type": "integer"}}))

    if expected is None:
        assert report.rejected == 1
        assert report.errors[0].message == f"column 'n': {cell!r} is not a valid integer"
    else:
        assert properties_of(store, "e1") == {"n": expected}


def test_integer_type_on_parquet_numbers(store, tmp_path):
    table = pa.table({
        "id": ["p1", "p2", "p3"], "user": ["u1"] * 3, "event": ["A"] * 3, "ts": ["2024-03-01T10:00:00Z"] * 3,
        "n": pa.array([3.0, 3.7, 4.0], type=pa.float64()),
    })
    pq.write_table(table, tmp_path / "events.parquet")

    report = import_file(store, tmp_path / "events.parquet",
                         mapping=mapping_with(**{"properties.n": {"column": "n", "type": "integer"}}))

    assert report.imported == 2
    assert properties_of(store, "p1") == {"n": 3}
    assert report.errors[0].line == 2
    assert report.errors[0].message == "column 'n': 3.7 is not a valid integer"


# -- TSV -------------------------------------------------------------------------------


def test_tsv_split_on_tabs(store, tmp_path):
    path = write_csv(tmp_path / "events.tsv", ["id", "user", "event", "ts"],
                     ["t1", "u1", "Report, Weekly", "2024-03-01T10:00:00Z"], delimiter="\t")

    report = import_file(store, path, mapping=Mapping.model_validate(TRACK_MAPPING))

    assert report.imported == 1
    assert store.scalar("SELECT event FROM events") == "Report, Weekly"


def test_cli_format_tsv(tmp_path, capsys):
    path = write_csv(tmp_path / "events.txt", ["id", "user", "event", "ts"],
                     ["t1", "u1", "A", "2024-03-01T10:00:00Z"], delimiter="\t")
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(json.dumps(TRACK_MAPPING))

    code = run_app(["import", "--db", str(tmp_path / "s.duckdb"), "--format", "tsv", "--mapping", str(mapping),
                    "--json", str(path)])

    assert code == 0
    assert json.loads(capsys.readouterr().out)["files"][0]["imported"] == 1


# -- interrupts and worker processes -----------------------------------------------------


def test_ordered_map_close_terminates_workers():
    earlier = {worker.pid for worker in spawned_workers(psutil.Process())}
    results = ordered_map(time.sleep, [0, 60, 60, 60, 60], workers=2)
    assert next(results) is None
    workers = [worker for worker in spawned_workers(psutil.Process()) if worker.pid not in earlier]
    started = time.monotonic()

    results.close()

    assert time.monotonic() - started < 10
    assert len(workers) == 2
    assert running(workers) == []


class InterruptedInsert:
    """A DuckDB connection whose INSERTs fail as DuckDB 2.0 fails a query that SIGINT interrupted."""

    def __init__(self, conn):
        self.conn = conn

    def __getattr__(self, name):
        return getattr(self.conn, name)

    def execute(self, sql, *args):
        if sql.startswith("INSERT"):
            raise RuntimeError("Query interrupted")
        return self.conn.execute(sql, *args)


def test_interrupted_insert_raises_keyboard_interrupt(store, tmp_path):
    path = write_jsonl(tmp_path / "sdk.jsonl", SDK_RECORD)
    connection = store.conn
    store.conn = InterruptedInsert(connection)

    with pytest.raises(KeyboardInterrupt):
        import_file(store, path)

    store.conn = connection
    assert store.scalar("SELECT count(*) FROM events") == 0
    assert import_file(store, path).imported == 1


def test_cli_interrupt_prints_one_line(tmp_path, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("upsignal.cli.core.import_file", interrupt)
    path = write_jsonl(tmp_path / "events.jsonl", SDK_RECORD)

    assert run_app(["import", "--db", str(tmp_path / "s.duckdb"), str(path)]) == 1

    assert capsys.readouterr().err.strip() == (
        "import interrupted; re-run it to continue: already stored events are skipped"
    )


IMPORT_SCRIPT = """
import sys
from upsignal.events.importers import import_file
from upsignal.store import Store
with Store(sys.argv[2]) as store:
    import_file(store, sys.argv[1], workers=2)
"""


def write_large_jsonl(path: Path, megabytes: int = 40) -> Path:
    """Write about ``megabytes`` MB of valid track events."""
    padding = "x" * 180
    with path.open("wb") as handle:
        for number in range(megabytes * 1024 * 1024 // 300):
            handle.write(orjson.dumps({
                "type": "track", "messageId": f"m{number}", "userId": f"u{number % 500}", "event": "Report Run",
                "timestamp": "2024-03-01T10:00:00Z", "properties": {"note": padding},
            }) + b"\n")
    return path


def spawned_workers(parent: psutil.Process) -> list[psutil.Process]:
    return [child for child in parent.children(recursive=True) if "spawn_main" in " ".join(_cmdline(child))]


def wait_for_workers(process: subprocess.Popen, timeout: float = 20) -> list[psutil.Process]:
    """Return the child processes of ``process`` once at least one spawned worker exists."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if spawned_workers(psutil.Process(process.pid)):
            return psutil.Process(process.pid).children(recursive=True)
        assert process.poll() is None, process.stderr.read().decode()
        time.sleep(0.05)
    pytest.fail("the import started no worker process")


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return []


def running(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


@pytest.mark.slow
def test_killed_import_leaves_no_workers(tmp_path):
    path = write_large_jsonl(tmp_path / "events.jsonl")
    process = subprocess.Popen([sys.executable, "-c", IMPORT_SCRIPT, str(path), str(tmp_path / "s.duckdb")],
                               stderr=subprocess.PIPE)
    try:
        children = wait_for_workers(process)
        time.sleep(1)
        children = psutil.Process(process.pid).children(recursive=True)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()

    deadline = time.monotonic() + 5
    while running(children) and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = running(children)
    for orphan in orphans:
        orphan.kill()
    assert orphans == []


@pytest.mark.slow
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="the CLI starts worker processes only with two or more CPUs")
def test_ctrl_c_prints_no_traceback(tmp_path):
    path = write_large_jsonl(tmp_path / "events.jsonl")
    command = [sys.executable, "-c", "from upsignal.cli import main; main()",
               "import", "--db", str(tmp_path / "s.duckdb"), str(path)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
    try:
        wait_for_workers(process)
        time.sleep(1)
        # A terminal sends Ctrl-C's SIGINT to the whole foreground process group.
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    text = stderr.decode()
    assert process.returncode == 1, text
    assert "Traceback" not in text
    assert text.strip().splitlines()[-1] == (
        "import interrupted; re-run it to continue: already stored events are skipped"
    )


# -- several files, one missing --------------------------------------------------------


def test_cli_missing_second_file_imports_nothing(tmp_path, capsys):
    good = write_jsonl(tmp_path / "good.jsonl", SDK_RECORD)
    db = tmp_path / "s.duckdb"

    code = run_app(["import", "--db", str(db), str(good), str(tmp_path / "absent.jsonl"), str(tmp_path / "gone.jsonl")])

    assert code == 1
    error = capsys.readouterr().err
    assert f"input files not found: {tmp_path / 'absent.jsonl'}, {tmp_path / 'gone.jsonl'}" in error.replace("\n", "")
    assert not db.exists()


def test_cli_unknown_format_imports_nothing(tmp_path, capsys):
    good = write_jsonl(tmp_path / "good.jsonl", SDK_RECORD)
    notes = tmp_path / "notes.txt"
    notes.write_text("not events\n")
    db = tmp_path / "s.duckdb"

    assert run_app(["import", "--db", str(db), str(good), str(notes)]) == 1

    assert "cannot tell the format of" in capsys.readouterr().err
    assert not db.exists()


def test_check_files_lists_every_problem(tmp_path):
    csv_path = write_csv(tmp_path / "a.csv", ["id", "user", "event", "ts"])

    with pytest.raises(ImportFileError) as raised:
        importers.check_files([tmp_path / "absent.jsonl", csv_path], mapping=mapping_with(userId="usr"))

    lines = str(raised.value).splitlines()
    assert lines[0] == "nothing was imported, because:"
    assert lines[1] == f"  input file not found: {tmp_path / 'absent.jsonl'}"
    assert lines[2].startswith("  mapping names column 'usr', which a.csv does not have")


def test_yaml_date_constant_becomes_text(tmp_path):
    path = tmp_path / "mapping.yaml"
    path.write_text("constants: {type: track, properties.since: 2024-01-02}\nfields: {userId: user}\n")

    assert load_mapping(path).apply({"user": "u1"})["properties"] == {"since": "2024-01-02"}


def test_mapping_path_inside_set_value_rejected(tmp_path):
    path = tmp_path / "mapping.yaml"
    path.write_text("constants: {type: track, properties: none}\nfields: {properties.plan: plan}\n")

    with pytest.raises(ImportFileError) as raised:
        load_mapping(path)

    assert str(raised.value) == (
        f"mapping file {path}: 'properties.plan' is inside 'properties', which is set to a value; map only one of them"
    )
