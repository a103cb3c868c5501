"""``upsignal alerts``: list, dead, show, retry and deliver, against a store file and a local receiver."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import yaml

from tests.vendors.accounts import START, add_account, score, set_score
from tests.vendors.webhook import PATH, WebhookReceiver
from upsignal.cli import run_app
from upsignal.config import ProjectConfig
from upsignal.store import Store

SECRET = "whsec-cli"


@pytest.fixture
def receiver():
    server = WebhookReceiver(SECRET.encode()).start()
    yield server
    server.stop()


@pytest.fixture
def setup(tmp_path, receiver, monkeypatch):
    """A store file with two PQL alerts for a webhook, and the project file naming it."""
    project = tmp_path / "upsignal.yaml"
    data = {"alerts": {"destinations": [{"name": "hook", "type": "webhook", "url": receiver.url + PATH,
                                         "secret_env": "CLI_WEBHOOK_SECRET", "timeout_seconds": 1}]}}
    project.write_text(yaml.safe_dump(data), encoding="utf-8")
    db = tmp_path / "store.duckdb"
    at = START + timedelta(hours=1)
    with Store(db) as store:
        for name in ("acme", "globex"):
            add_account(store, name)
            set_score(store, name, 90, at)
        score(store, at, ProjectConfig.model_validate(data).alerts)
    monkeypatch.setenv("CLI_WEBHOOK_SECRET", SECRET)
    return ["--db", str(db), "--project", str(project)], ["--db", str(db)]


def run_json(capsys, *args: str) -> tuple[int, object]:
    code = run_app([*args, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def test_dead_letter_retried_then_delivered(setup, receiver, capsys):
    deliver_args, db_args = setup
    with Store(db_args[1], read_only=True) as store:
        rejected = store.scalar("SELECT alert_key FROM alert_outbox ORDER BY alert_id LIMIT 1")
    receiver.rejected_keys.add(rejected)

    code, report = run_json(capsys, "alerts", "deliver", *deliver_args)
    assert code == 1
    assert report["delivered"] == {"hook": {"delivered": 1, "dead": 1}}

    code, dead = run_json(capsys, "alerts", "dead", *db_args)
    assert code == 0
    assert [row["alert_key"] for row in dead] == [rejected]
    assert dead[0]["last_error"].startswith("HTTP 422")

    receiver.rejected_keys.clear()
    code, queued = run_json(capsys, "alerts", "retry", *db_args)
    assert (code, queued) == (0, {"queued": 1})
    code, report = run_json(capsys, "alerts", "deliver", *deliver_args)
    assert (code, report["delivered"]) == (0, {"hook": {"delivered": 1}})

    code, delivered = run_json(capsys, "alerts", "list", "--status", "delivered", *db_args)
    assert len(delivered) == 2
    code, attempts = run_json(capsys, "alerts", "show", str(dead[0]["alert_id"]), *db_args)
    assert [item["outcome"] for item in attempts] == ["dead", "delivered"]
    assert len(receiver.processed) == 2


def test_dry_run_sends_nothing_and_needs_no_secret(setup, receiver, capsys, monkeypatch):
    deliver_args, db_args = setup
    monkeypatch.delenv("CLI_WEBHOOK_SECRET")

    code = run_app(["alerts", "deliver", "--dry-run", *deliver_args])

    planned = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [request["body"]["data"]["account_id"] for request in planned["hook"]] == ["acme", "globex"]
    assert planned["hook"][0]["headers"]["Upsignal-Signature"] == "<v1=HMAC-SHA256 keyed with $CLI_WEBHOOK_SECRET>"
    assert receiver.log == []
    code, pending = run_json(capsys, "alerts", "list", "--status", "pending", *db_args)
    assert len(pending) == 2


def test_missing_secret_names_the_variable(setup, capsys, monkeypatch):
    deliver_args, _ = setup
    monkeypatch.delenv("CLI_WEBHOOK_SECRET")

    code = run_app(["alerts", "deliver", *deliver_args])

    assert code == 1
    assert "CLI_WEBHOOK_SECRET is not set" in capsys.readouterr().err


def test_unknown_destination_is_an_error(setup, capsys):
    deliver_args, _ = setup

    code = run_app(["alerts", "deliver", "--destination", "nope", *deliver_args])

    assert code == 1
    assert "destination 'nope' is not in the project file" in capsys.readouterr().err


def test_invalid_status_is_a_usage_error(setup, capsys):
    _, db_args = setup

    assert run_app(["alerts", "list", "--status", "sent", *db_args]) == 2


@pytest.mark.parametrize("command", ["list", "dead", "show", "retry", "deliver"])
def test_every_command_has_an_example(command, capsys):
    assert run_app(["alerts", command, "--help"]) == 0
    assert "Example: upsignal alerts" in capsys.readouterr().out


def test_score_command_queues_alerts(tmp_path, receiver, capsys, monkeypatch):
    from tests.conftest import write_jsonl
    from tests.vendors.accounts import MODEL_YAML

    project = tmp_path / "upsignal.yaml"
    project.write_text(yaml.safe_dump({"alerts": {"destinations": [
        {"name": "hook", "type": "webhook", "url": receiver.url + PATH, "secret_env": "CLI_WEBHOOK_SECRET"}]}}))
    monkeypatch.setenv("UPSIGNAL_PROJECT", str(project))
    monkeypatch.setenv("CLI_WEBHOOK_SECRET", SECRET)
    model = tmp_path / "model.yaml"
    model.write_text(MODEL_YAML)
    events = write_jsonl(
        tmp_path / "events.jsonl",
        {"type": "group", "userId": "u1", "groupId": "acme", "messageId": "g1", "timestamp": "2024-03-01T08:00:00Z",
         "traits": {"name": "Acme", "domain": "acme.example"}},
        {"type": "track", "userId": "u1", "event": "Level Set", "messageId": "t1",
         "timestamp": "2024-03-01T09:00:00Z", "properties": {"level": 90}},
    )
    db = str(tmp_path / "store.duckdb")
    assert run_app(["import", str(events), "--db", db]) == 0

    assert run_app(["score", "--db", db, "--model", str(model), "--as-of", "2024-03-01T12:00:00Z"]) == 0
    capsys.readouterr()

    code, pending = run_json(capsys, "alerts", "list", "--db", db)
    assert (code, [(row["account_id"], row["status"]) for row in pending]) == (0, [("acme", "pending")])
    assert run_app(["alerts", "deliver", "--db", db]) == 0
    assert [body["data"]["account_id"] for body in receiver.processed.values()] == ["acme"]
