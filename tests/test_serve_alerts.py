"""upsignal serve delivers PQL alerts while it runs, and re-scores idle accounts."""

from __future__ import annotations

import os
import time
import uuid
from datetime import datetime, timedelta

import httpx

from tests.conftest import add_events
from tests.vendors.webhook import PATH, WebhookReceiver
from upsignal.config import ProjectConfig, ServerSettings
from upsignal.events.schema import utc_now
from upsignal.identity import resolve_accounts
from upsignal.server import ServerOptions, create_app
from upsignal.server.keys import create_key
from upsignal.server.live import LiveScorer
from upsignal.server.testing import serve_in_thread
from upsignal.signals.model import parse_model
from upsignal.store import Store

SECRET = "serve-alerts-secret"
MODEL = """
name: one-report-is-a-pql
signals:
  reports: {type: count, event: Report Run, window: 7d, sentence: "ran {value} reports {window}"}
rules:
  - signal: reports
    steps: [{at: 1, points: 90}]
tiers: [{name: cold, min: 0}, {name: pql, min: 80}]
"""


def test_serve_delivers_alert_for_new_pql(tmp_path):
    db, model = tmp_path / "serve.duckdb", tmp_path / "model.yaml"
    model.write_text(MODEL)
    with Store(db) as store:
        _, key = create_key(store, "web-app")
    receiver = WebhookReceiver(SECRET.encode()).start()
    os.environ["SERVE_ALERTS_SECRET"] = SECRET
    project = ProjectConfig.model_validate({"alerts": {"destinations": [
        {"name": "hook", "type": "webhook", "url": receiver.url + PATH, "secret_env": "SERVE_ALERTS_SECRET"}]}})
    options = ServerOptions(db=db, model=model, settings=ServerSettings(scoring_interval_seconds=0.2), project=project)
    try:
        with serve_in_thread(create_app(options)) as running:
            event = {"type": "track", "userId": "ann", "event": "Report Run", "messageId": str(uuid.uuid4()),
                     "timestamp": utc_now().isoformat() + "Z", "context": {"groupId": "acme"}}
            response = httpx.post(running.url + "/v1/batch", json={"batch": [event]}, auth=(key, ""), timeout=30)
            assert response.status_code == 200, response.text

            deadline = time.monotonic() + 30
            while not receiver.processed and time.monotonic() < deadline:
                time.sleep(0.1)
    finally:
        receiver.stop()
        del os.environ["SERVE_ALERTS_SECRET"]

    bodies = list(receiver.processed.values())
    assert len(bodies) == 1
    assert "acme" in str(bodies[0])
    assert "ran 1 reports in the last 7 days" in str(bodies[0])


def test_full_pass_moves_idle_account_out_of_window(store):
    model = parse_model(MODEL)
    start = datetime(2024, 5, 1)
    add_events(store, {"type": "track", "userId": "ann", "event": "Report Run", "context": {"groupId": "acme"},
                       "timestamp": start.isoformat() + "Z"})
    resolve_accounts(store)
    scorer = LiveScorer(store, model, MODEL, full_interval=3600)

    scorer.run_full_pass(start + timedelta(hours=1))
    scorer.run_full_pass(start + timedelta(days=8))

    assert store.scalar("SELECT tier FROM account_state WHERE account_id = 'acme'") == "cold"
    assert store.scalar("SELECT count(*) FROM score_runs") == 2
