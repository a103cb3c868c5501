"""One harness per destination type: its local vendor server, the destination under
test, and the vendor-specific ways to read effects and provoke failures, so a
single contract suite can run against all four."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tests.vendors import hubspot, salesforce, slack, webhook
from tests.vendors.base import Fault, VendorServer
from upsignal.alerts.context import ActiveUser, Alert
from upsignal.alerts.destination import Destination
from upsignal.alerts.registry import create_destination
from upsignal.config import ProjectConfig

KINDS = ("webhook", "slack", "hubspot", "salesforce")
WEBHOOK_SECRET = "whsec-test-0123456789"
TIMEOUT = 0.5


def make_alert(number: int, **changes: Any) -> Alert:
    """A realistic alert for account ``acct{number}``, with a fresh key."""
    fields: dict[str, Any] = dict(
        alert_id=number, key=str(uuid.uuid4()), destination="test", event="entered", attempt=1,
        transition_id=number, account_id=f"acct{number}.example", name=f"Account {number}",
        domain=f"acct{number}.example", url=f"http://127.0.0.1:8080/api/accounts/acct{number}.example",
        score=91.0, previous_score=62.0, tier="pql", from_tier="hot", pql_tier="pql",
        as_of=datetime(2024, 3, 1, 12), model_version="abc123def456",
        reasons=[f"ran {150 + number} reports or queries in the last 7 days, 3x the 7 days before",
                 "5 colleagues signed up in the last 28 days",
                 "at 92% of the free plan's project limit"],
        signals={"reports_run": 150.0 + number}, active_users=7, active_users_window="7d",
        top_users=[ActiveUser("Ada Lovelace", f"ada@acct{number}.example", 42)],
    )
    fields.update(changes)
    return Alert(**fields)


@dataclass
class Harness:
    kind: str
    server: VendorServer
    destination: Destination
    effects: Callable[[], Counter[str]]  # alert key -> records that carry it
    text_of: Callable[[Alert], str]  # what the rep reads for an alert
    reject: Callable[[Alert], None]  # make the vendor refuse this alert's record
    expire_credentials: Callable[[], None]  # the next request meets a 401
    restore_credentials: Callable[[], None]
    rate_limit_fault: Callable[[int | None], Fault]
    effect_path: str  # the request that makes the alert's record
    after_401: str  # delivered (session renewed), retry, or failed
    default_rate_limit_wait: float | None  # Retry-After assumed when the vendor sends none


def destination_settings(kind: str, server: VendorServer) -> dict[str, Any]:
    """The destination entry of upsignal.yaml that points at a local server."""
    common = {"name": f"test-{kind}", "type": kind, "timeout_seconds": TIMEOUT}
    if kind == "webhook":
        return {**common, "url": server.url + webhook.PATH, "secret_env": "TEST_WEBHOOK_SECRET",
                "rate_limit": {"requests": 1000, "seconds": 1}}
    if kind == "slack":
        # The documented limit is 1 message per second; the contract tests use a fast one.
        return {**common, "webhook_url_env": "TEST_SLACK_URL", "rate_limit": {"requests": 1000, "seconds": 1}}
    if kind == "hubspot":
        return {**common, "token_env": "TEST_HUBSPOT_TOKEN", "api_url": server.url}
    return {**common, "login_url": server.url, "client_id_env": "TEST_SF_CLIENT_ID",
            "client_secret_env": "TEST_SF_CLIENT_SECRET"}


def environment(kind: str, server: VendorServer) -> dict[str, str]:
    """The secrets a destination reads, as environment variables."""
    return {
        "webhook": {"TEST_WEBHOOK_SECRET": WEBHOOK_SECRET},
        "slack": {"TEST_SLACK_URL": getattr(server, "webhook_url", "")},
        "hubspot": {"TEST_HUBSPOT_TOKEN": "pat-test-token"},
        "salesforce": {"TEST_SF_CLIENT_ID": "3MVG-test", "TEST_SF_CLIENT_SECRET": "s3cret"},
    }[kind]


def start_server(kind: str) -> VendorServer:
    server = {
        "webhook": lambda: webhook.WebhookReceiver(WEBHOOK_SECRET.encode()),
        "slack": slack.SlackServer,
        "hubspot": hubspot.HubSpotServer,
        "salesforce": salesforce.SalesforceServer,
    }[kind]()
    return server.start()


def build_destination(kind: str, server: VendorServer, **overrides: Any) -> Destination:
    entry = {**destination_settings(kind, server), **overrides}
    project = ProjectConfig.model_validate({"alerts": {"destinations": [entry]}})
    return create_destination(project.alerts.destinations[0])


def build_harness(kind: str, server: VendorServer, destination: Destination) -> Harness:
    return {"webhook": _webhook, "slack": _slack, "hubspot": _hubspot, "salesforce": _salesforce}[kind](
        server, destination)


def _webhook(server: webhook.WebhookReceiver, destination: Destination) -> Harness:
    original = server.secret

    def expire() -> None:
        server.secret = b"rotated-secret"

    def restore() -> None:
        server.secret = original

    return Harness(
        "webhook", server, destination, lambda: Counter(server.effects),
        lambda alert: json.dumps(server.processed.get(alert.key)),
        lambda alert: server.rejected_keys.add(alert.key), expire, restore,
        lambda seconds: Fault("status", 429, {"error": "slow down"},
                              {"Retry-After": str(seconds)} if seconds is not None else {}, path=webhook.PATH),
        webhook.PATH, "failed", None,
    )


def _slack(server: slack.SlackServer, destination: Destination) -> Harness:
    def expire() -> None:
        server.inject(Fault("status", 404, "no_service", path=slack.PATH))

    return Harness(
        "slack", server, destination, server.alert_counts,
        lambda alert: json.dumps([message for message in server.messages if alert.key in json.dumps(message)]),
        lambda alert: server.rejected_keys.add(alert.key), expire, lambda: None,
        lambda seconds: Fault("status", 429, "rate_limited",
                              {"Retry-After": str(seconds)} if seconds is not None else {}, path=slack.PATH),
        slack.PATH, "failed", None,
    )


def _hubspot(server: hubspot.HubSpotServer, destination: Destination) -> Harness:
    def text_of(alert: Alert) -> str:
        notes = [note for note in server.objects["notes"].values()
                 if note["properties"].get("upsignal_alert_key") == alert.key]
        companies = server.companies_with("upsignal_domain", alert.domain)
        return json.dumps([note["properties"] for note in notes] + [company["properties"] for company in companies])

    def expire() -> None:
        server.token = "pat-rotated"

    def restore() -> None:
        server.token = "pat-test-token"

    return Harness(
        "hubspot", server, destination, lambda: server.engagement_counts("notes"), text_of,
        lambda alert: server.reject.add(alert.key), expire, restore,
        lambda seconds: Fault("status", 429, {"status": "error", "errorType": "RATE_LIMIT",
                                              "policyName": "TEN_SECONDLY_ROLLING",
                                              "message": "You have reached your ten_secondly_rolling limit."},
                              {"Retry-After": str(seconds)} if seconds is not None else {},
                              path="/crm/v3/objects/notes/batch/upsert"),
        "/crm/v3/objects/notes/batch/upsert", "retry", 10.0,
    )


def _salesforce(server: salesforce.SalesforceServer, destination: Destination) -> Harness:
    def text_of(alert: Alert) -> str:
        tasks = [task for task in server.records["Task"].values() if task.get("Upsignal_Alert_Key__c") == alert.key]
        accounts = [account for account in server.records["Account"].values()
                    if account.get("Upsignal_Domain__c") == alert.domain]
        return json.dumps(tasks + accounts)

    task_path = f"{salesforce.API}/composite/sobjects/Task"
    return Harness(
        "salesforce", server, destination, server.tasks_by_key, text_of,
        lambda alert: server.reject.add(alert.key), server.expire_sessions, lambda: None,
        # Salesforce signals an exhausted request allocation with 403 REQUEST_LIMIT_EXCEEDED, not 429.
        lambda seconds: Fault("status", 403, salesforce.sf_error("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
                              {"Retry-After": str(seconds)} if seconds is not None else {}, path=task_path),
        task_path, "delivered", 900.0,
    )
