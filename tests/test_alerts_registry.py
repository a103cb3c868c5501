"""Destination types: the built-in entry points, a third-party class, and configuration errors."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pydantic
import pytest

from tests.vendors.accounts import START, add_account, score, set_score
from upsignal.alerts.destination import Delivered, Destination, Failed, Outcome, PlannedRequest
from upsignal.alerts.dispatcher import Dispatcher
from upsignal.alerts.registry import destination_class, installed_types
from upsignal.config import ProjectConfig
from upsignal.errors import ConfigError

RECEIVED: list[tuple[str, str]] = []


class ListDestination(Destination):
    """A third-party destination: appends alerts to a list, failing accounts named in ``options.reject``."""

    kind = "list"
    max_batch_size = 10

    def __init__(self, settings, dry_run: bool = False):
        super().__init__(settings, dry_run)
        self.reject = set(settings.options.get("reject", []))

    def deliver(self, alerts: Sequence) -> list[Outcome]:
        outcomes: list[Outcome] = []
        for alert in alerts:
            if alert.account_id in self.reject:
                outcomes.append(Failed(f"{alert.account_id} is on the reject list"))
                continue
            RECEIVED.append((alert.key, alert.account_id))
            outcomes.append(Delivered(f"item {len(RECEIVED)}"))
        return outcomes

    def plan(self, alerts: Sequence) -> list[PlannedRequest]:
        return [PlannedRequest("APPEND", "memory://list", body=alert.account_id) for alert in alerts]


class NotADestination:
    pass


def test_builtin_types_are_entry_points():
    assert installed_types() == ["hubspot", "salesforce", "slack", "webhook"]
    assert destination_class("slack").__name__ == "SlackDestination"


def test_third_party_class_receives_alerts(store):
    RECEIVED.clear()
    settings = ProjectConfig.model_validate({"alerts": {"destinations": [
        {"name": "mine", "type": f"{__name__}:ListDestination", "options": {"reject": ["globex"]}}]}})
    at = START + timedelta(hours=1)
    for name in ("acme", "globex"):
        add_account(store, name)
        set_score(store, name, 90, at)
    score(store, at, settings.alerts)

    with Dispatcher(store, settings) as dispatcher:
        report = dispatcher.deliver()

    assert report == {"mine": {"delivered": 1, "dead": 1}}
    assert [account for _, account in RECEIVED] == ["acme"]
    dead = store.rows("SELECT last_error FROM alert_outbox WHERE status = 'dead'")
    assert dead == [{"last_error": "globex is on the reject list"}]


def test_unknown_type_names_the_installed_ones():
    with pytest.raises(ConfigError, match="no destination type 'teams' is installed .*hubspot, salesforce"):
        destination_class("teams")


def test_class_must_be_a_destination():
    with pytest.raises(ConfigError, match="is not a subclass"):
        destination_class(f"{__name__}:NotADestination")


def test_missing_module_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot be imported"):
        destination_class("no_such_package.module:Thing")


def test_invalid_destination_settings_rejected():
    with pytest.raises(pydantic.ValidationError, match="unknown time zone"):
        ProjectConfig.model_validate({"alerts": {"destinations": [
            {"name": "crm", "type": "hubspot", "timezone": "Mars/Olympus"}]}})
    with pytest.raises(pydantic.ValidationError, match="names must be unique"):
        ProjectConfig.model_validate({"alerts": {"destinations": [
            {"name": "a", "type": "webhook", "url": "http://x"}, {"name": "a", "type": "webhook", "url": "http://y"}]}})
