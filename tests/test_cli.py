"""The upsignal command as a user runs it: output shapes, help and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_jsonl

UPSIGNAL = str(Path(sys.executable).with_name("upsignal"))


def run(*args: str, cwd: Path | None = None, check_code: int | None = 0) -> subprocess.CompletedProcess:
    done = subprocess.run([UPSIGNAL, *args], capture_output=True, text=True, cwd=cwd, timeout=120)
    if check_code is not None:
        assert done.returncode == check_code, done.stderr
    return done


@pytest.fixture(scope="module")
def scored_db(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    events = [
        {"type": "identify", "userId": "ana", "traits": {"email": "ana@mail.acme.co.in", "name": "Ana"},
         "timestamp": "2024-03-01T09:00:00Z"},
        {"type": "identify", "userId": "ben", "traits": {"email": "ben@ACME.co.in"}, "timestamp": "2024-03-01T09:00:00Z"},
        {"type": "identify", "userId": "cat", "traits": {"email": "cat@gmail.com"}, "timestamp": "2024-03-01T09:00:00Z"},
    ]
    events += [
        {"type": "track", "userId": "ana" if i % 2 else "ben", "event": "Report Run", "messageId": f"r{i}",
         "timestamp": f"2024-03-0{2 + i % 5}T10:{i:02d}:00Z"}
        for i in range(55)
    ]
    events += [{"type": "track", "userId": "ana", "event": "Invite Sent", "messageId": f"i{i}",
                "timestamp": "2024-03-04T10:00:00Z"} for i in range(6)]
    path = write_jsonl(folder / "events.jsonl", *events)
    db = folder / "store.duckdb"
    run("import", str(path), "--db", str(db))
    run("score", "--as-of", "2024-03-07T00:00:00Z", "--db", str(db))
    return db


def test_accounts_json_has_documented_fields(scored_db):
    accounts = json.loads(run("accounts", "--json", "--db", str(scored_db)).stdout)

    acme = next(item for item in accounts if item["account_id"] == "acme.co.in")
    assert {"account_id", "domain", "name", "score", "tier", "signals", "reasons"} <= acme.keys()
    assert acme["domain"] == "acme.co.in"
    assert acme["signals"]["reports_run"] == 55
    assert any("ran 55 reports or queries in the last 7 days" in reason for reason in acme["reasons"])


def test_accounts_filters_by_tier(scored_db):
    accounts = json.loads(run("accounts", "--tier", "cold", "--json", "--db", str(scored_db)).stdout)

    assert [item["account_id"] for item in accounts] == ["user:cat"]


def test_users_json_has_documented_fields(scored_db):
    users = json.loads(run("users", "--json", "--db", str(scored_db)).stdout)

    by_id = {user["user_id"]: user for user in users}
    assert by_id["ben"]["email"] == "ben@acme.co.in"
    assert by_id["ana"]["account_id"] == by_id["ben"]["account_id"] == "acme.co.in"
    assert by_id["cat"]["account_id"] == "user:cat"


def test_explain_json_lists_contributions(scored_db):
    explanation = json.loads(run("explain", "acme.co.in", "--json", "--db", str(scored_db)).stdout)

    rules = {item["rule"]: item for item in explanation["contributions"]}
    assert rules["reports_run"]["threshold"] == 50
    assert rules["teammates_added"]["value"] == 6


def test_table_output_shows_account(scored_db):
    output = run("accounts", "--db", str(scored_db)).stdout

    assert "acme.co.in" in output


def test_stats_json_keys(scored_db):
    stats = json.loads(run("stats", "--json", "--db", str(scored_db)).stdout)

    assert stats == {"events": 64, "users": 3, "accounts": 2, "rejected": 0, "duplicates": 0}


def test_unknown_account_exits_1(scored_db):
    done = run("explain", "nobody", "--db", str(scored_db), check_code=1)

    assert "'nobody' has no score" in done.stderr


def test_bad_as_of_is_usage_error(scored_db):
    done = run("score", "--as-of", "yesterday", "--db", str(scored_db), check_code=2)

    assert "ISO 8601" in done.stderr


def test_missing_input_file_exits_1(tmp_path):
    done = run("import", str(tmp_path / "missing.jsonl"), "--db", str(tmp_path / "s.duckdb"), check_code=1)

    assert "input file not found" in done.stderr


def test_init_writes_model_once(tmp_path):
    run("init", cwd=tmp_path)
    again = run("init", cwd=tmp_path, check_code=1)

    assert (tmp_path / "upsignal.model.yaml").read_text().startswith("# upsignal default scoring model")
    assert "--force" in again.stderr


def test_sql_prints_dialect(tmp_path):
    spark = run("sql", "--dialect", "spark", "--as-of", "2024-03-07").stdout
    unknown = run("sql", "--dialect", "nosuchdb", check_code=2)

    assert "GET_JSON_OBJECT" in spark or "MAX_BY" in spark or "CAST(" in spark
    assert "unknown dialect" in unknown.stderr


def test_every_command_has_help_with_example():
    from upsignal.cli import app
    from typer.main import get_command

    group = get_command(app)
    for name, command in group.commands.items():
        subcommands = getattr(command, "commands", None)
        for leaf_name, leaf in (subcommands or {name: command}).items():
            assert leaf.help and "Example:" in leaf.help, f"{name} {leaf_name} has no example in its help"


def test_read_command_on_missing_store_exits_1(tmp_path):
    done = run("stats", "--db", str(tmp_path / "typo.duckdb"), check_code=1)

    assert "store not found" in done.stderr
    assert not (tmp_path / "typo.duckdb").exists()


def test_project_file_names_store_and_model(scored_db, tmp_path):
    (tmp_path / "upsignal.yaml").write_text(f"db: {scored_db}\n")

    stats = json.loads(run("stats", "--json", cwd=tmp_path).stdout)

    assert stats["events"] == 64


def test_broken_project_file_exits_1(tmp_path):
    (tmp_path / "upsignal.yaml").write_text("server: {port: abc}\n")

    done = run("stats", cwd=tmp_path, check_code=1)

    assert "'server.port'" in done.stderr


def test_help_shows_defaults():
    assert "[default: now]" in run("score", "-h").stdout


def test_unknown_tier_names_known_tiers(scored_db):
    done = run("accounts", "--tier", "PQL", "--db", str(scored_db))

    assert "no account is in tier 'PQL'; tiers in the store:" in done.stderr
