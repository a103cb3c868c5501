"""HubSpot specifics: matching existing companies by domain, properties, tasks, the daily limit."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.vendors.base import Fault
from tests.vendors.harness import build_destination, make_alert, start_server
from upsignal.alerts.destination import Delivered, Failed, Retry
from upsignal.alerts.destinations.hubspot_api import seconds_until_midnight


@pytest.fixture
def server(monkeypatch):
    vendor = start_server("hubspot")
    monkeypatch.setenv("TEST_HUBSPOT_TOKEN", "pat-test-token")
    yield vendor
    vendor.stop()


def test_existing_company_is_reused_not_duplicated(server):
    older = server.add_company(domain="acct1.example", name="Acct One (from sales)", createdate="1")
    server.add_company(domain="acct1.example", name="Acct One duplicate", createdate="2")
    destination = build_destination("hubspot", server)

    outcome = destination.deliver([make_alert(1)])[0]

    assert isinstance(outcome, Delivered)
    assert len(server.objects["companies"]) == 2
    company = server.objects["companies"][older]["properties"]
    assert company["upsignal_domain"] == "acct1.example"
    assert company["name"] == "Acct One (from sales)"
    assert company["upsignal_score"] == "91"
    assert company["upsignal_tier"] == "pql"
    assert company["upsignal_pql_date"] == "2024-03-01"
    note_id = next(iter(server.objects["notes"]))
    assert server.associated_companies("notes", note_id) == [older]


def test_new_company_is_named_after_the_account(server):
    destination = build_destination("hubspot", server)

    destination.deliver([make_alert(2)])

    [company] = server.companies_with("upsignal_domain", "acct2.example")
    assert company["properties"]["name"] == "Account 2"
    assert company["properties"]["domain"] == "acct2.example"


def test_properties_are_created_once(server):
    destination = build_destination("hubspot", server)

    destination.deliver([make_alert(1)])
    destination.deliver([make_alert(2)])

    creates = [path for method, path, _ in server.log if path.endswith("/batch/create") and "properties" in path]
    assert creates == ["/crm/v3/properties/companies/batch/create", "/crm/v3/properties/notes/batch/create"]
    assert server.properties["companies"]["upsignal_domain"]["hasUniqueValue"] is True
    assert server.properties["notes"]["upsignal_alert_key"]["hasUniqueValue"] is True


def test_task_goes_to_the_company_owner(server):
    server.add_company(domain="acct3.example", name="Acct Three", hubspot_owner_id="77")
    destination = build_destination("hubspot", server, engagement="task")
    alert = make_alert(3)

    assert isinstance(destination.deliver([alert])[0], Delivered)

    [task] = server.objects["tasks"].values()
    assert task["properties"]["hubspot_owner_id"] == "77"
    assert task["properties"]["hs_task_subject"] == "Account 3 (acct3.example) is a PQL: score 91, up from 62"
    assert "ran 153 reports or queries" in task["properties"]["hs_task_body"]
    assert server.engagement_counts("tasks") == {alert.key: 1}


def test_daily_limit_waits_until_midnight(server):
    destination = build_destination("hubspot", server, timezone="America/New_York")
    server.inject(Fault("status", 429, {"status": "error", "errorType": "RATE_LIMIT", "policyName": "DAILY",
                                        "message": "You have reached your daily limit."}))

    before = seconds_until_midnight("America/New_York")
    outcome = destination.deliver([make_alert(1)])[0]
    after = seconds_until_midnight("America/New_York")

    assert isinstance(outcome, Retry)
    assert outcome.rate_limited
    assert after <= outcome.retry_after <= before


def test_account_without_domain_is_a_dead_letter(server):
    destination = build_destination("hubspot", server)

    outcomes = destination.deliver([make_alert(1, domain=None), make_alert(2)])

    assert isinstance(outcomes[0], Failed)
    assert "has no domain" in outcomes[0].reason
    assert isinstance(outcomes[1], Delivered)


def test_company_rejected_in_207_fails_its_alerts_only(server):
    destination = build_destination("hubspot", server)
    server.reject.add("acct1.example")

    outcomes = destination.deliver([make_alert(1), make_alert(2)])

    assert isinstance(outcomes[0], Failed)
    assert "VALIDATION_ERROR" in outcomes[0].reason
    assert isinstance(outcomes[1], Delivered)
    assert 207 in server.statuses("/crm/v3/objects/companies/batch/upsert")
    assert len(server.objects["notes"]) == 1


def test_leaving_pql_keeps_the_pql_date(server):
    destination = build_destination("hubspot", server)
    destination.deliver([make_alert(1)])

    destination.deliver([make_alert(1, event="left", tier="hot", from_tier="pql", score=55.0,
                                    as_of=datetime(2024, 3, 9, 12))])

    [company] = server.companies_with("upsignal_domain", "acct1.example")
    assert company["properties"]["upsignal_tier"] == "hot"
    assert company["properties"]["upsignal_pql_date"] == "2024-03-01"


def test_midnight_wait_uses_the_account_time_zone():
    moment = datetime(2024, 3, 1, 23, 0, tzinfo=UTC)  # 18:00 in New York

    assert seconds_until_midnight("America/New_York", moment) == 6 * 3600
