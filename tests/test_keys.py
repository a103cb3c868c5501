"""Write keys: the keys commands, hashed storage and revocation."""

from __future__ import annotations

import json

import pytest

from upsignal.cli import run_app
from upsignal.errors import NotFoundError, UpsignalError
from upsignal.server.keys import active_key_sources, create_key, hash_key, list_keys, revoke_key
from upsignal.store import Store


def test_create_key_stores_only_hash(store):
    record, key = create_key(store, "web-app")
    stored = store.rows("SELECT * FROM write_keys")[0]
    assert key.startswith("usk_")
    assert stored["key_hash"] == hash_key(key)
    assert key not in json.dumps(stored, default=str)
    assert stored["source"] == "web-app"
    assert record.key_prefix == key[:10]


def test_active_sources_skip_revoked_keys(store):
    kept, kept_key = create_key(store, "web-app")
    gone, gone_key = create_key(store, "old-app")
    revoke_key(store, gone.key_id)
    assert active_key_sources(store) == {hash_key(kept_key): "web-app"}
    assert [record.revoked_at is not None for record in list_keys(store)] == [False, True]


def test_revoke_unknown_key_raises(store):
    with pytest.raises(NotFoundError, match="upsignal keys list"):
        revoke_key(store, "key_missing")


@pytest.mark.parametrize("source", ["", "has space", "-leading-dash", "x" * 101])
def test_invalid_source_name_raises(store, source):
    with pytest.raises(UpsignalError, match="source"):
        create_key(store, source)


def test_keys_commands_round_trip(tmp_path, capsys):
    db = str(tmp_path / "keys.duckdb")
    assert run_app(["keys", "create", "mobile", "--db", db]) == 0
    key = capsys.readouterr().out
    assert key.count("\n") == 1
    assert key.strip().startswith("usk_")

    assert run_app(["keys", "list", "--db", db, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [item["source"] for item in listed] == ["mobile"]
    assert listed[0]["revoked_at"] is None

    assert run_app(["keys", "revoke", listed[0]["key_id"], "--db", db]) == 0
    capsys.readouterr()
    with Store(db, read_only=True) as store:
        assert active_key_sources(store) == {}
    assert run_app(["keys", "revoke", "key_nothere", "--db", db]) == 1


def test_serve_rejects_more_workers(tmp_path, capsys):
    assert run_app(["serve", "--workers", "2", "--db", str(tmp_path / "w.duckdb")]) == 2
    assert "single process" in capsys.readouterr().err
