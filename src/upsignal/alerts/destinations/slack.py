"""Slack incoming webhook: one Block Kit message per alert.

Incoming webhooks have no idempotency key and no way to read back what was
posted. So Slack is the one built-in destination that is at least once rather
than exactly once. If the dispatcher stops after Slack accepted a message and
before the outcome was stored, the message is posted again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx

from upsignal.alerts.context import Alert
from upsignal.alerts.destination import (
    Delivered,
    Destination,
    Failed,
    Outcome,
    PlannedRequest,
    deliver_each,
)
from upsignal.alerts.http import HttpSender, classify_status, snippet, transport_failure
from upsignal.alerts.render import activity_line, headline, user_phrase
from upsignal.config import RateLimitSettings, SlackSettings, secret

# Block Kit limits: 150 characters in a header, 3,000 in a section's text.
HEADER_LIMIT = 150
SECTION_LIMIT = 3000


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as markup.

    >>> escape("Ada <ada@acme.com> & co")
    'Ada &lt;ada@acme.com&gt; &amp; co'
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def message(alert: Alert) -> dict[str, Any]:
    """Return the webhook body: Block Kit blocks, with the headline as the notification text."""
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": clip(headline(alert), HEADER_LIMIT)}},
    ]
    if alert.reasons:
        reasons = "\n".join(f"• {escape(reason)}" for reason in alert.reasons)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": clip(f"*Why*\n{reasons}", SECTION_LIMIT)}})
    activity = escape(activity_line(alert))
    if alert.top_users:
        activity += "\nMost active: " + escape("; ".join(user_phrase(user) for user in alert.top_users))
    blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": clip(activity, SECTION_LIMIT)}})
    blocks.append({
        "type": "actions",
        "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open account"}, "url": alert.url}],
    })
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"upsignal alert {alert.key}"}]})
    return {"text": headline(alert), "blocks": blocks}


class SlackDestination(Destination):
    """Posts each alert to one incoming webhook, whose URL is a secret read from the environment."""

    kind = "slack"
    # One alert per deliver call, so each message's outcome is stored before the next is
    # posted: a crash can then repeat at most the one message in flight.
    max_batch_size = 1
    # Slack allows about one message per second per webhook, with short bursts, and
    # responds 429 with Retry-After beyond that: https://api.slack.com/docs/rate-limits
    default_rate_limit = RateLimitSettings(requests=1, seconds=1)
    idempotent = False

    def __init__(self, settings: SlackSettings, dry_run: bool = False):
        super().__init__(settings, dry_run)
        self.url = f"<${settings.webhook_url_env}>" if dry_run else secret(settings.webhook_url_env)
        self.sender = HttpSender(self.name, settings.timeout_seconds, self.rate_limit)

    def deliver(self, alerts: Sequence[Alert]) -> list[Outcome]:
        return deliver_each(alerts, self._post)

    def _post(self, alert: Alert) -> Outcome:
        try:
            response = self.sender.send("POST", self.url, label="incoming webhook", json=message(alert))
        except httpx.TransportError as error:
            return transport_failure(error)
        outcome = classify_status(response)
        if isinstance(outcome, Failed):
            # 400 invalid_payload, 403 action_prohibited, 404 no_service, 410 channel_is_archived, ...
            return Failed(f"Slack rejected the message: HTTP {response.status_code} {snippet(response)}", outcome.status_code)
        return outcome or Delivered()

    def plan(self, alerts: Sequence[Alert]) -> list[PlannedRequest]:
        url = f"<${self.settings.webhook_url_env}>"
        return [PlannedRequest("POST", url, {"Content-Type": "application/json"}, message(alert)) for alert in alerts]

    def close(self) -> None:
        self.sender.close()
