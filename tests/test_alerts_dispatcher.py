"""The dispatcher against local vendor servers: outbox states, attempts, backoff, pauses, recovery."""

from __future__ import annotations

import random
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.vendors.accounts import START, add_account, add_activity, score, set_score
from tests.vendors.base import Fault
from tests.vendors.harness import KINDS, destination_settings, environment, start_server
from tests.vendors.slack import SlackServer
from tests.vendors.webhook import PATH, WebhookReceiver
from upsignal.alerts.dispatcher import Dispatcher, RetryPolicy, plan_deliveries
from upsignal.alerts.outbox import Outbox, OutboxRow, retry_alerts
from upsignal.alerts.destination import Retry
from upsignal.config import ProjectConfig
from upsignal.scoring import explain_account

SECRET = "whsec-dispatch"


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def receiver(monkeypatch):
    server = WebhookReceiver(SECRET.encode()).start()
    monkeypatch.setenv("DISPATCH_SECRET", SECRET)
    yield server
    server.stop()


def project(receiver: WebhookReceiver, **alerts) -> ProjectConfig:
    hook = {"name": "hook", "type": "webhook", "url": receiver.url + PATH, "secret_env": "DISPATCH_SECRET",
            "timeout_seconds": 0.5}
    return ProjectConfig.model_validate(
        {"alerts": {"backoff_seconds": 30, "max_attempts": 3, "destinations": [hook], **alerts}}
    )


def pql_accounts(store, settings: ProjectConfig, *names: str, at: datetime = START + timedelta(hours=1)) -> None:
    for name in names:
        add_account(store, name, users=2)
        set_score(store, name, 90, at)
    score(store, at, settings.alerts)


def deliver(store, settings, clock=None, wait_seconds=0.0):
    with Dispatcher(store, settings, clock=clock or (lambda: datetime.now(UTC).replace(tzinfo=None))) as dispatcher:
        return dispatcher.deliver(wait_seconds=wait_seconds)


def outbox_rows(store):
    return store.rows("SELECT * FROM alert_outbox ORDER BY alert_id")


def attempts(store):
    return store.rows("SELECT * FROM alert_attempts ORDER BY alert_id, attempt")


def test_delivers_with_context_and_records_attempt(store, receiver):
    settings = project(receiver, base_url="https://upsignal.example.com")
    add_account(store, "acme", users=3)
    add_activity(store, "acme", user=1, reports=4, at=START + timedelta(days=8))
    add_activity(store, "acme", user=1, reports=12, at=START + timedelta(days=15))
    set_score(store, "acme", 90, START + timedelta(days=15))
    score(store, START + timedelta(days=8), settings.alerts)
    score(store, START + timedelta(days=15), settings.alerts)

    report = deliver(store, settings)

    assert report == {"hook": {"delivered": 1}}
    body = next(iter(receiver.processed.values()))["data"]
    explanation = explain_account(store, "acme")
    assert body["reasons"] == explanation.reasons[:3]
    assert "ran 12 reports in the last 7 days, 3x the 7 days before" in body["reasons"]
    assert body["url"] == "https://upsignal.example.com/api/accounts/acme"
    assert (body["name"], body["domain"], body["score"], body["tier"]) == ("Acme", "acme.example", 91.0, "pql")
    assert body["active_users"] == 2  # user 1 ran reports; user 0 sent the Level Set event
    assert body["top_users"] == []
    assert [row["status"] for row in outbox_rows(store)] == ["delivered"]
    assert [(row["attempt"], row["outcome"]) for row in attempts(store)] == [(1, "delivered")]


def test_personal_data_names_most_active_users(store, receiver):
    settings = project(receiver, personal_data=True, top_users=1)
    add_account(store, "acme", users=3)
    add_activity(store, "acme", user=2, reports=5, at=START + timedelta(hours=1))
    add_activity(store, "acme", user=1, reports=2, at=START + timedelta(hours=1))
    pql_accounts(store, settings, at=START + timedelta(hours=1))
    set_score(store, "acme", 90, START + timedelta(hours=2))
    score(store, START + timedelta(hours=2), settings.alerts)

    deliver(store, settings)

    body = next(iter(receiver.processed.values()))["data"]
    assert body["active_users"] == 3
    assert body["top_users"] == [{"name": "User 2 of acme", "email": "u2@acme.example", "events": 5}]


def test_server_error_is_retried_with_backoff(store, receiver):
    settings = project(receiver)
    pql_accounts(store, settings, "acme")
    clock = Clock(datetime(2030, 1, 1))
    receiver.inject(Fault("status", 503, {"error": "down"}))

    first = deliver(store, settings, clock=clock)

    row = outbox_rows(store)[0]
    assert first == {"hook": {"retry": 1}}
    assert (row["status"], row["failures"]) == ("pending", 1)
    assert clock.now + timedelta(seconds=15) <= row["next_attempt_at"] <= clock.now + timedelta(seconds=30)
    assert attempts(store)[0]["status_code"] == 503
    clock.now = row["next_attempt_at"]
    assert deliver(store, settings, clock=clock) == {"hook": {"delivered": 1}}
    assert len(receiver.processed) == 1


def test_retry_after_pauses_the_destination(store, receiver):
    settings = project(receiver)
    pql_accounts(store, settings, "acme", "globex", "initech")
    clock = Clock(datetime(2030, 1, 1))
    receiver.inject(Fault("status", 429, {"error": "slow down"}, {"Retry-After": "120"}))

    report = deliver(store, settings, clock=clock, wait_seconds=60)

    rows = outbox_rows(store)
    assert report == {"hook": {"rate_limited": 3}}
    assert len(receiver.statuses(PATH)) == 1
    assert all(clock.now + timedelta(seconds=120) <= row["next_attempt_at"] <= clock.now + timedelta(seconds=132)
               for row in rows)
    assert all(row["failures"] == 0 for row in rows)


def test_gives_up_after_max_attempts(store, receiver):
    settings = project(receiver)
    pql_accounts(store, settings, "acme")
    clock = Clock(datetime(2030, 1, 1))
    receiver.inject(*[Fault("status", 500, {"error": "boom"}) for _ in range(3)])

    for _ in range(3):
        deliver(store, settings, clock=clock)
        clock.now += timedelta(hours=1)

    row = outbox_rows(store)[0]
    assert row["status"] == "dead"
    assert row["last_error"].startswith("gave up after 3 failed attempts; last error: HTTP 500")
    assert [item["outcome"] for item in attempts(store)] == ["retry", "retry", "dead"]


def test_permanent_failure_is_dead_until_retried(store, receiver):
    settings = project(receiver)
    pql_accounts(store, settings, "acme")
    receiver.inject(Fault("status", 422, {"error": "unprocessable"}))

    assert deliver(store, settings) == {"hook": {"dead": 1}}
    assert outbox_rows(store)[0]["last_error"].startswith("HTTP 422")

    assert retry_alerts(store, datetime(2000, 1, 1)) == 1
    assert deliver(store, settings) == {"hook": {"delivered": 1}}
    assert outbox_rows(store)[0]["status"] == "delivered"


def test_rows_of_a_crashed_dispatcher_are_recovered(store, receiver):
    settings = project(receiver)
    pql_accounts(store, settings, "acme", "globex")
    crashed = Outbox(store, owner="otherhost:4242:deadbeef/1")
    crashed.claim("hook", 10, datetime(2030, 1, 1))

    report = deliver(store, settings)

    assert report == {"hook": {"delivered": 2}}
    assert [(row["attempt"], row["outcome"]) for row in attempts(store)] == [
        (1, "interrupted"), (2, "delivered"), (1, "interrupted"), (2, "delivered"),
    ]
    assert set(receiver.effects.values()) == {1}


def test_settle_ignores_rows_claimed_by_another_dispatcher(store, receiver):
    settings = project(receiver)
    pql_accounts(store, settings, "acme")
    first = Outbox(store)
    row = first.claim("hook", 10, datetime(2030, 1, 1))[0]
    other = Outbox(store)

    other.settle([RetryPolicy(3, 30, 60, random.Random(1)).settle(row, Retry("late"), datetime(2030, 1, 1))],
                 datetime(2030, 1, 1))

    assert outbox_rows(store)[0]["status"] == "delivering"


def test_rate_limit_keeps_slack_within_its_window(store, monkeypatch):
    # The documented limit is one message per second; both sides run at one per 0.2 s here.
    server = SlackServer(burst=1, window=0.2).start()
    monkeypatch.setenv("TEST_SLACK_URL", server.webhook_url)
    entry = {**destination_settings("slack", server), "rate_limit": {"requests": 1, "seconds": 0.2}}
    settings = ProjectConfig.model_validate({"alerts": {"destinations": [entry]}})
    pql_accounts(store, settings, *[f"team{number}" for number in range(5)])

    started = time.monotonic()
    report = deliver(store, settings)
    elapsed = time.monotonic() - started
    server.stop()

    assert report == {"test-slack": {"delivered": 5}}
    assert 429 not in server.statuses()
    assert elapsed >= 0.8


def test_all_destinations_from_one_run(store, monkeypatch):
    servers = {kind: start_server(kind) for kind in KINDS}
    for kind, server in servers.items():
        for name, value in environment(kind, server).items():
            monkeypatch.setenv(name, value)
    entries = [destination_settings(kind, server) for kind, server in servers.items()]
    settings = ProjectConfig.model_validate({"alerts": {"destinations": entries}})
    pql_accounts(store, settings, "acme", "globex", "initech")

    report = deliver(store, settings)

    for server in servers.values():
        server.stop()
    assert report == {f"test-{kind}": {"delivered": 3} for kind in KINDS}
    assert len(servers["hubspot"].objects["notes"]) == 3
    assert len(servers["salesforce"].records["Task"]) == 3
    assert len(servers["slack"].messages) == 3
    assert len(servers["webhook"].processed) == 3


def test_run_forever_delivers_new_alerts_until_stopped(store, receiver):
    settings = project(receiver)
    dispatcher = Dispatcher(store, settings)
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run_forever, args=(stop,))
    thread.start()

    pql_accounts(store, settings, "acme")
    deadline = time.monotonic() + 5
    while not receiver.processed and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(timeout=5)
    dispatcher.close()

    assert not thread.is_alive()
    assert len(receiver.processed) == 1


def test_dry_run_plans_without_claiming(store, receiver):
    settings = project(receiver)
    pql_accounts(store, settings, "acme")

    planned = plan_deliveries(store, settings)

    assert [request.method for request in planned["hook"]] == ["POST"]
    assert planned["hook"][0].body["data"]["account_id"] == "acme"
    assert outbox_rows(store)[0]["status"] == "pending"
    assert receiver.log == []


def test_backoff_policy_honours_retry_after_and_caps():
    policy = RetryPolicy(max_attempts=10, base_seconds=30, max_seconds=600, rng=random.Random(3))
    row = OutboxRow(1, "k", 1, "hook", "entered", attempt=1, failures=8)
    now = datetime(2030, 1, 1)

    capped = policy.settle(row, Retry("boom"), now)
    honoured = policy.settle(row, Retry("slow down", retry_after=45), now)

    assert now + timedelta(seconds=300) <= capped.retry_at <= now + timedelta(seconds=600)
    assert now + timedelta(seconds=45) <= honoured.retry_at <= now + timedelta(seconds=49.5)
