"""Opening, migrating and guarding the DuckDB store."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import add_events
from upsignal.errors import StoreError
from upsignal.store import Store, resolve_path
from upsignal.store.database import _migrations


def test_new_store_has_latest_schema(tmp_path):
    with Store(tmp_path / "s.duckdb") as store:
        assert store.schema_version() == max(version for version, _, _ in _migrations())


def test_reopening_keeps_events_and_applies_nothing_twice(tmp_path):
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        add_events(store, {"type": "track", "userId": "u", "event": "E", "timestamp": "2024-01-01T00:00:00Z"})
        applied = store.scalar("SELECT count(*) FROM schema_version")

    with Store(path) as store:
        assert store.scalar("SELECT count(*) FROM events") == 1
        assert store.scalar("SELECT count(*) FROM schema_version") == applied


def test_store_from_newer_upsignal_is_refused(tmp_path):
    path = tmp_path / "s.duckdb"
    with Store(path) as store:
        store.conn.execute("INSERT INTO schema_version VALUES (999, 'future', now()::TIMESTAMP)")

    with pytest.raises(StoreError, match="schema version 999, newer than"):
        Store(path)


def test_unreadable_store_names_the_file(tmp_path):
    path = tmp_path / "s.duckdb"
    path.write_bytes(b"this is not a duckdb file")

    with pytest.raises(StoreError, match=str(path)):
        Store(path)


def test_path_comes_from_argument_then_environment(monkeypatch):
    monkeypatch.setenv("UPSIGNAL_DB", "/data/from-env.duckdb")

    assert resolve_path("given.duckdb") == "given.duckdb"
    assert resolve_path() == "/data/from-env.duckdb"
    monkeypatch.delenv("UPSIGNAL_DB")
    assert resolve_path() == "upsignal.duckdb"


def test_failed_transaction_stores_nothing(store):
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.conn.execute("INSERT INTO ingest_counters VALUES ('extra', 1)")
            raise RuntimeError("stop")

    assert store.scalar("SELECT count(*) FROM ingest_counters WHERE name = 'extra'") == 0


def test_store_locked_by_other_process_says_why(tmp_path):
    path = tmp_path / "s.duckdb"
    Store(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from upsignal.store import Store; s = Store({str(path)!r}); print('open', flush=True); input()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreError, match="another process has it open"):
            Store(path)
    finally:
        holder.communicate("\n", timeout=30)


def test_store_registers_identity_sql_functions(store):
    names = {row["function_name"] for row in store.rows(
        "SELECT function_name FROM duckdb_functions() WHERE function_name LIKE 'upsignal_%'")}

    assert names == {"upsignal_account_domain", "upsignal_merge_traits"}
