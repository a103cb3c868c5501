"""Salesforce: upsert the Account by an External ID field, then a Task for its owner.

For a batch of alerts:

1. a SOQL query finds the existing Accounts by ``account_key_field`` (an
   External ID field holding the account's domain or upsignal id), with their
   owners;
2. an sObject Collections upsert by that field writes score, tier, reasons and
   PQL date, and ``Name`` only on Accounts it creates;
3. a second collections upsert writes one Task per alert, keyed by the alert
   key in ``task_key_field`` (an External ID field on Activity), related to the
   Account and assigned to its owner.

Both writes are upserts by a key, so re-delivering an alert changes nothing.
Collections take at most 200 records per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from upsignal.alerts.context import Alert
from upsignal.alerts.destination import Delivered, Destination, Failed, Outcome, PlannedRequest
from upsignal.alerts.destinations.salesforce_api import SalesforceSession, Stop, record_outcome, require_extra
from upsignal.alerts.http import HttpSender
from upsignal.alerts.render import headline, plain_text
from upsignal.config import SalesforceSettings

# Salesforce caps Task subjects at 255 characters and long text areas at 32,000.
SUBJECT_LIMIT = 255
DESCRIPTION_LIMIT = 32000


class SalesforceDestination(Destination):
    """Accounts and Tasks in one Salesforce org."""

    kind = "salesforce"
    # sObject Collections upsert takes at most 200 records per request:
    # https://developer.salesforce.com/docs/platform/api-rest/guide/resources-composite-sobjects-collections-upsert.html
    max_batch_size = 200
    # Salesforce has no per-second limit for these calls, only the org's 24-hour request
    # allocation, which it enforces with 403 REQUEST_LIMIT_EXCEEDED:
    # https://developer.salesforce.com/docs/platform/salesforce-app-limits-cheatsheet/guide/salesforce-app-limits-platform-api.html
    default_rate_limit = None

    def __init__(self, settings: SalesforceSettings, dry_run: bool = False):
        super().__init__(settings, dry_run)
        self.format_soql = require_extra()
        self.sender = HttpSender(self.name, settings.timeout_seconds, self.rate_limit)
        self.session = SalesforceSession(settings, self.sender)

    def key_of(self, alert: Alert) -> str | None:
        return alert.domain if self.settings.account_key == "domain" else alert.account_id

    def deliver(self, alerts: Sequence[Alert]) -> list[Outcome]:
        outcomes: dict[int, Outcome] = {}
        for alert in alerts:
            if not self.key_of(alert):
                outcomes[alert.alert_id] = Failed(
                    f"account {alert.account_id} has no domain; set account_key: account_id to match"
                    " Salesforce Accounts by the upsignal account id instead"
                )
        pending = [alert for alert in alerts if alert.alert_id not in outcomes]
        try:
            accounts = self.upsert_accounts(pending, outcomes)
            pending = [alert for alert in pending if alert.alert_id not in outcomes]
            self.upsert_tasks(pending, accounts, outcomes)
        except Stop as stop:
            for alert in alerts:
                outcomes.setdefault(alert.alert_id, stop.outcome)
        return [outcomes[alert.alert_id] for alert in alerts]

    # -- accounts -------------------------------------------------------------------

    def existing_accounts(self, keys: list[str]) -> dict[str, dict[str, str]]:
        """Return key -> {Id, OwnerId} for the Accounts that already have one of the keys."""
        field = self.settings.account_key_field
        query = self.format_soql(f"SELECT Id, OwnerId, {field} FROM Account WHERE {field} IN {{keys}}", keys=keys)
        found: dict[str, dict[str, str]] = {}
        answer = self.session.call("GET", "/query", params={"q": query})
        for record in answer.get("records", []):
            found[record[field]] = {"Id": record["Id"], "OwnerId": record.get("OwnerId")}
        return found

    def upsert_accounts(self, alerts: list[Alert], outcomes: dict[int, Outcome]) -> dict[str, dict[str, str]]:
        """Upsert one Account per key; return key -> {Id, OwnerId}, recording failures in ``outcomes``."""
        latest: dict[str, Alert] = {}
        for alert in sorted(alerts, key=lambda item: (item.as_of, item.alert_id)):
            latest[self.key_of(alert)] = alert
        if not latest:
            return {}
        existing = self.existing_accounts(list(latest))
        records = [self.account_record(key, alert, key not in existing) for key, alert in latest.items()]
        results = self.upsert("Account", self.settings.account_key_field, records)
        accounts: dict[str, dict[str, str]] = {}
        for (key, _), result in zip(latest.items(), results, strict=True):
            problem = record_outcome(result)
            if problem is None:
                accounts[key] = {"Id": result["id"], "OwnerId": existing.get(key, {}).get("OwnerId")}
                continue
            for alert in alerts:
                if self.key_of(alert) == key:
                    outcomes[alert.alert_id] = problem
        return accounts

    def account_record(self, key: str, alert: Alert, new: bool) -> dict[str, Any]:
        settings = self.settings
        record: dict[str, Any] = {"attributes": {"type": "Account"}, settings.account_key_field: key}
        if new:
            record["Name"] = alert.display_name
        fields = {
            settings.score_field: alert.score,
            settings.tier_field: alert.tier,
            settings.reasons_field: "\n".join(alert.reasons)[:DESCRIPTION_LIMIT],
        }
        if alert.event == "entered" and alert.is_pql:
            fields[settings.pql_date_field] = alert.as_of.date().isoformat()
        record.update({name: value for name, value in fields.items() if name})
        return record

    # -- tasks ------------------------------------------------------------------------

    def upsert_tasks(self, alerts: list[Alert], accounts: dict[str, dict[str, str]], outcomes: dict[int, Outcome]) -> None:
        """Upsert one Task per alert by its key, related to the Account and owned by the Account's owner."""
        if not alerts:
            return
        records = [self.task_record(alert, accounts[self.key_of(alert)]) for alert in alerts]
        results = self.upsert("Task", self.settings.task_key_field, records)
        for alert, result in zip(alerts, results, strict=True):
            account_id = accounts[self.key_of(alert)]["Id"]
            outcomes[alert.alert_id] = record_outcome(result) or Delivered(f"Account {account_id}, Task {result['id']}")

    def task_record(self, alert: Alert, account: dict[str, str | None]) -> dict[str, Any]:
        record: dict[str, Any] = {
            "attributes": {"type": "Task"},
            self.settings.task_key_field: alert.key,
            "WhatId": account["Id"],
            "Subject": headline(alert)[:SUBJECT_LIMIT],
            "Description": plain_text(alert)[:DESCRIPTION_LIMIT],
            "ActivityDate": (alert.as_of + timedelta(days=1)).date().isoformat(),
            "Status": "Not Started",
            "Priority": self.settings.task_priority,
        }
        if account.get("OwnerId"):
            record["OwnerId"] = account["OwnerId"]
        return record

    def upsert(self, sobject: str, key_field: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """PATCH an sObject Collections upsert; return one result per record, in order."""
        results = self.session.call(
            "PATCH", f"/composite/sobjects/{sobject}/{key_field}", json={"allOrNone": False, "records": records}
        )
        if not isinstance(results, list) or len(results) != len(records):
            raise Stop(Failed(f"Salesforce returned an invalid response to the {sobject} upsert"))
        return results

    # -- dry run ------------------------------------------------------------------------

    def plan(self, alerts: Sequence[Alert]) -> list[PlannedRequest]:
        settings = self.settings
        base = f"<instance URL from {settings.login_url}>/services/data/v{settings.api_version}"
        auth = {"Authorization": f"Bearer <token from the {settings.auth} flow>"}
        keyed = [alert for alert in alerts if self.key_of(alert)]
        keys = sorted({self.key_of(alert) for alert in keyed})
        field = settings.account_key_field
        query = self.format_soql(f"SELECT Id, OwnerId, {field} FROM Account WHERE {field} IN {{keys}}", keys=keys)
        accounts = [self.account_record(self.key_of(alert), alert, new=True) for alert in keyed]
        tasks = [self.task_record(alert, {"Id": f"<Account Id of {self.key_of(alert)}>"}) for alert in keyed]
        return [
            PlannedRequest("POST", f"{settings.login_url.rstrip('/')}/services/oauth2/token", {},
                           {"grant_type": settings.auth}),
            PlannedRequest("GET", f"{base}/query", auth, {"q": query}),
            PlannedRequest("PATCH", f"{base}/composite/sobjects/Account/{field}", auth,
                           {"allOrNone": False, "records": accounts}),
            PlannedRequest("PATCH", f"{base}/composite/sobjects/Task/{settings.task_key_field}", auth,
                           {"allOrNone": False, "records": tasks}),
        ]

    def close(self) -> None:
        self.sender.close()
