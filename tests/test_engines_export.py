"""Exporting the store's events to date-partitioned Parquet, the Spark engine's input layout."""

from __future__ import annotations

import json

import duckdb
import pytest

from tests.conftest import add_events
from upsignal.cli import run_app
from upsignal.signals.engines.lake import export_events
from upsignal.store import Store

EVENTS = [
    {"type": "identify", "userId": "u1", "traits": {"email": "ann@acme.com"}, "timestamp": "2024-03-01T23:59:59.999999Z"},
    {"type": "track", "userId": "u1", "event": "Report Run", "properties": {"rows": 5, "tags": ["a"]},
     "timestamp": "2024-03-02T00:00:00Z"},
    {"type": "page", "anonymousId": "v1", "name": "Pricing", "context": {"groupId": "ws-1"},
     "timestamp": "2024-03-02T12:00:00Z"},
    {"type": "group", "userId": "u1", "groupId": "ws-1", "traits": {"plan": "free"}, "timestamp": "2024-03-05T08:00:00Z"},
]


def read_lake(folder) -> duckdb.DuckDBPyRelation:
    return duckdb.sql(f"SELECT * FROM read_parquet('{folder}/*/*.parquet', hive_partitioning = true)")


def test_one_folder_per_utc_date(store, tmp_path):
    add_events(store, *EVENTS)

    result = export_events(store, tmp_path / "lake")

    assert sorted(path.name for path in (tmp_path / "lake").iterdir()) == [
        "date=2024-03-01", "date=2024-03-02", "date=2024-03-05",
    ]
    assert result.events == 4
    assert result.partitions == 3


def test_rows_keep_every_column(store, tmp_path):
    add_events(store, *EVENTS)
    export_events(store, tmp_path / "lake")

    relation = read_lake(tmp_path / "lake")
    exported = {row[0]: dict(zip(relation.columns, row)) for row in relation.fetchall()}
    stored = {row["message_id"]: row for row in store.rows("SELECT * FROM events")}
    assert sorted(exported) == sorted(stored)
    for message_id, row in stored.items():
        for column, value in row.items():
            if column in ("properties", "traits", "context"):
                assert exported[message_id][column] == (None if value is None else str(value)), column
            else:
                assert exported[message_id][column] == value, column


def test_json_columns_are_text(store, tmp_path):
    add_events(store, *EVENTS)
    export_events(store, tmp_path / "lake")

    relation = read_lake(tmp_path / "lake")
    types = dict(zip(relation.columns, relation.types))
    assert str(types["properties"]) == "VARCHAR"
    assert str(types["traits"]) == "VARCHAR"
    assert str(types["timestamp"]) == "TIMESTAMP"


def test_microsecond_before_midnight_stays_on_its_day(store, tmp_path):
    add_events(store, *EVENTS)
    export_events(store, tmp_path / "lake")

    day = duckdb.sql(f"SELECT type FROM read_parquet('{tmp_path}/lake/date=2024-03-01/*.parquet')").fetchall()
    assert day == [("identify",)]


def test_non_empty_folder_rejected(store, tmp_path):
    add_events(store, *EVENTS)
    (tmp_path / "lake").mkdir()
    (tmp_path / "lake" / "notes.txt").write_text("keep me")

    with pytest.raises(FileExistsError):
        export_events(store, tmp_path / "lake")
    assert (tmp_path / "lake" / "notes.txt").exists()


def test_overwrite_replaces_contents(store, tmp_path):
    add_events(store, *EVENTS[:1])
    export_events(store, tmp_path / "lake")
    add_events(store, *EVENTS[1:])

    result = export_events(store, tmp_path / "lake", overwrite=True)

    assert result.events == 4
    assert read_lake(tmp_path / "lake").count("*").fetchall()[0][0] == 4


def test_export_command_json(tmp_path, capsys):
    db = tmp_path / "store.duckdb"
    with Store(db) as store:
        add_events(store, *EVENTS)

    assert run_app(["export", "events", "--parquet", str(tmp_path / "lake"), "--db", str(db), "--json"]) == 0
    output = json.loads(capsys.readouterr().out)
    assert output["events"] == 4
    assert output["partitions"] == 3
    assert output["directory"] == str(tmp_path / "lake")


def test_export_command_rejects_non_empty_folder(tmp_path, capsys):
    db = tmp_path / "store.duckdb"
    with Store(db) as store:
        add_events(store, *EVENTS)
    (tmp_path / "lake").mkdir()
    (tmp_path / "lake" / "old.parquet").write_bytes(b"")

    assert run_app(["export", "events", "--parquet", str(tmp_path / "lake"), "--db", str(db)]) == 2
    assert "--overwrite" in capsys.readouterr().err
