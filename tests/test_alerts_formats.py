"""Alert content: headlines, the Slack message, the webhook body and its signature."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from tests.vendors.harness import make_alert
from upsignal.alerts.context import ActiveUser
from upsignal.alerts.destinations.slack import message
from upsignal.alerts.destinations.webhook import sign, verify_signature, webhook_body
from upsignal.alerts.render import headline, html_text, plain_text

SECRET = b"whsec-formats"


def test_headline_for_each_transition():
    assert headline(make_alert(1)) == "Account 1 (acct1.example) is a PQL: score 91, up from 62"
    assert headline(make_alert(1, tier="hot", score=55.0, previous_score=40.0)) == (
        "Account 1 (acct1.example) entered tier hot: score 55, up from 40")
    assert headline(make_alert(1, event="left", tier="hot", from_tier="pql", score=58.0, previous_score=81.0)) == (
        "Account 1 (acct1.example) left tier pql for hot: score 58, down from 81")
    assert headline(make_alert(1, name=None, previous_score=None)) == "acct1.example is a PQL: score 91"


def test_plain_text_lists_reasons_users_and_link():
    text = plain_text(make_alert(2))

    assert "- ran 152 reports or queries in the last 7 days, 3x the 7 days before" in text
    assert "7 active users in the last 7 days" in text
    assert "Most active: Ada Lovelace <ada@acct2.example> (42 events)" in text
    assert text.endswith("Account: http://127.0.0.1:8080/api/accounts/acct2.example")


def test_no_users_named_without_personal_data():
    alert = make_alert(2, top_users=[])

    assert "Most active" not in plain_text(alert)
    assert "ada@" not in html_text(alert)
    assert "ada@" not in json.dumps(message(alert))


def test_html_escapes_names():
    alert = make_alert(3, name="Smith & <Sons>", top_users=[ActiveUser("Bo", "bo@x.example", 3)])

    html = html_text(alert)

    assert "Smith &amp; &lt;Sons&gt;" in html
    assert "Bo &lt;bo@x.example&gt; (3 events)" in html


def test_slack_message_fits_block_kit_limits():
    alert = make_alert(4, name="N" * 300)

    body = message(alert)

    header, reasons, activity, actions, context = body["blocks"]
    assert len(header["text"]["text"]) == 150
    assert reasons["text"]["text"].startswith("*Why*\n• ran 154 reports")
    assert "Ada Lovelace &lt;ada@acct4.example&gt;" in activity["text"]["text"]
    assert actions["elements"][0]["url"] == alert.url
    assert context["elements"][0]["text"] == f"upsignal alert {alert.key}"
    assert body["text"].startswith("N" * 10)


def test_webhook_body_is_stable_across_attempts():
    alert = make_alert(5)

    first = webhook_body(alert)
    alert.attempt = 2

    assert webhook_body(alert) == first
    assert json.loads(first)["id"] == alert.key
    assert json.loads(first)["type"] == "tier.entered"
    assert json.loads(first)["data"]["reasons"] == alert.reasons


def test_signature_as_documented_for_receivers():
    body = webhook_body(make_alert(6))
    timestamp = int(time.time())

    expected = "v1=" + hmac.new(SECRET, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()

    assert sign(SECRET, timestamp, body) == expected
    assert verify_signature(SECRET, body, str(timestamp), expected)


def test_signature_rejects_tampering_and_replays():
    body = webhook_body(make_alert(7))
    now = int(time.time())
    signature = sign(SECRET, now, body)

    assert not verify_signature(SECRET, body + b" ", str(now), signature)
    assert not verify_signature(b"other-secret", body, str(now), signature)
    assert not verify_signature(SECRET, body, str(now - 600), sign(SECRET, now - 600, body))
    assert not verify_signature(SECRET, body, "not-a-number", signature)
