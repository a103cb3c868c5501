"""The destination contract, run against every destination and its local vendor server."""

from __future__ import annotations

import json

import pytest

from tests.vendors.base import Fault
from tests.vendors.harness import KINDS, build_destination, build_harness, environment, make_alert, start_server
from upsignal.alerts.destination import Delivered, Failed, Retry


@pytest.fixture(params=KINDS)
def harness(request, monkeypatch):
    server = start_server(request.param)
    for name, value in environment(request.param, server).items():
        monkeypatch.setenv(name, value)
    destination = build_destination(request.param, server)
    yield build_harness(request.param, server, destination)
    destination.close()
    server.stop()


def test_batch_delivers_each_alert_once(harness):
    alerts = [make_alert(number) for number in range(3)]

    outcomes = harness.destination.deliver(alerts)

    assert all(isinstance(outcome, Delivered) for outcome in outcomes), outcomes
    assert harness.effects() == {alert.key: 1 for alert in alerts}


def test_alert_carries_usage_context(harness):
    alert = make_alert(7)

    harness.destination.deliver([alert])

    text = harness.text_of(alert)
    assert "Account 7" in text
    assert "acct7.example" in text
    assert "91" in text
    assert "ran 157 reports or queries in the last 7 days, 3x the 7 days before" in text
    assert alert.url in text


def test_redelivery_is_harmless_where_idempotent(harness):
    alerts = [make_alert(number) for number in range(2)]

    harness.destination.deliver(alerts)
    second = harness.destination.deliver(alerts)

    assert all(isinstance(outcome, Delivered) for outcome in second)
    expected = 1 if harness.destination.idempotent else 2
    assert harness.effects() == {alert.key: expected for alert in alerts}


def test_partial_failure_fails_only_that_alert(harness):
    alerts = [make_alert(number) for number in range(3)]
    harness.reject(alerts[1])

    outcomes = harness.destination.deliver(alerts)

    assert isinstance(outcomes[0], Delivered)
    assert isinstance(outcomes[1], Failed), outcomes[1]
    assert isinstance(outcomes[2], Delivered)
    assert harness.effects() == {alerts[0].key: 1, alerts[2].key: 1}


@pytest.mark.parametrize("retry_after", [7, None])
def test_rate_limit_pauses_with_its_wait(harness, retry_after):
    alerts = [make_alert(number) for number in range(2)]
    harness.server.inject(harness.rate_limit_fault(retry_after))

    outcomes = harness.destination.deliver(alerts)

    assert all(isinstance(outcome, Retry) and outcome.rate_limited for outcome in outcomes), outcomes
    expected_wait = retry_after if retry_after is not None else harness.default_rate_limit_wait
    assert {outcome.retry_after for outcome in outcomes} == {expected_wait}
    assert all(isinstance(outcome, Delivered) for outcome in harness.destination.deliver(alerts))
    assert harness.effects() == {alert.key: 1 for alert in alerts}


def test_server_error_is_retryable(harness):
    alert = make_alert(1)
    harness.server.inject(Fault("status", 503, {"message": "service unavailable"}, path=harness.effect_path))

    outcome = harness.destination.deliver([alert])[0]

    assert isinstance(outcome, Retry)
    assert not outcome.rate_limited
    assert isinstance(harness.destination.deliver([alert])[0], Delivered)
    assert harness.effects() == {alert.key: 1}


def test_other_client_error_is_permanent(harness):
    alert = make_alert(1)
    harness.server.inject(Fault("status", 400, {"message": "bad request"}, path=harness.effect_path))

    outcome = harness.destination.deliver([alert])[0]

    assert isinstance(outcome, Failed)
    assert outcome.status_code == 400


@pytest.mark.parametrize("fault", ["slow", "drop"])
def test_lost_answer_is_retryable_and_repeat_harmless(harness, fault):
    alert = make_alert(1)
    # The vendor stores the record, then the answer is lost: timeout or dropped connection.
    harness.server.inject(Fault(fault, delay=1.5, apply=True, path=harness.effect_path))

    outcome = harness.destination.deliver([alert])[0]

    assert isinstance(outcome, Retry), outcome
    assert isinstance(harness.destination.deliver([alert])[0], Delivered)
    assert harness.effects()[alert.key] == (1 if harness.destination.idempotent else 2)


def test_dropped_connection_before_arrival_is_retryable(harness):
    alert = make_alert(1)
    harness.server.inject(Fault("drop", path=harness.effect_path))

    assert isinstance(harness.destination.deliver([alert])[0], Retry)
    assert isinstance(harness.destination.deliver([alert])[0], Delivered)
    assert harness.effects() == {alert.key: 1}


def test_unauthorized_follows_the_vendor_rule(harness):
    alert = make_alert(1)
    harness.destination.deliver([make_alert(2)])
    harness.expire_credentials()

    outcome = harness.destination.deliver([alert])[0]

    expected = {"delivered": Delivered, "retry": Retry, "failed": Failed}[harness.after_401]
    assert isinstance(outcome, expected), outcome
    harness.restore_credentials()
    if harness.after_401 == "retry":
        assert isinstance(harness.destination.deliver([alert])[0], Delivered)
        assert harness.effects()[alert.key] == 1


def test_plan_sends_nothing_and_hides_secrets(harness):
    alerts = [make_alert(number) for number in range(2)]
    requests_before = len(harness.server.log)

    planned = harness.destination.plan(alerts)

    assert planned
    assert len(harness.server.log) == requests_before
    text = json.dumps([request.to_dict() for request in planned])
    for secret in ("pat-test-token", "s3cret", "whsec-test-0123456789", "/services/T0000AAAA"):
        assert secret not in text
    assert alerts[0].key in text or alerts[0].domain in text


def test_full_batch_fits_vendor_limits(harness):
    alerts = [make_alert(number) for number in range(harness.destination.batch_size)]

    outcomes = harness.destination.deliver(alerts)

    assert all(isinstance(outcome, Delivered) for outcome in outcomes)
    assert len(harness.effects()) == len(alerts)
