"""Generic webhook: one signed JSON POST per alert.

Each request carries these headers:

- ``Upsignal-Timestamp``: Unix time in seconds when the request was signed;
- ``Upsignal-Signature``: ``v1=`` and the hex HMAC-SHA256, keyed with the shared
  secret, of the timestamp, a full stop and the raw body (``f"{timestamp}.{body}"``);
- ``Idempotency-Key``: the alert key, the same on every retry of the alert;
- ``Upsignal-Event``: ``tier.entered`` or ``tier.left``.

A receiver recomputes the signature over the raw body, compares it in constant
time, rejects timestamps older than a few minutes (replays), and ignores an
``Idempotency-Key`` it has already processed while still responding 2xx.
``verify_signature`` does all but the last step.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence

import httpx
import orjson

from upsignal.alerts.context import Alert
from upsignal.alerts.destination import Delivered, Destination, Outcome, PlannedRequest, deliver_each
from upsignal.alerts.http import HttpSender, classify_status, transport_failure
from upsignal.config import WebhookSettings, secret

SIGNATURE_HEADER = "Upsignal-Signature"
TIMESTAMP_HEADER = "Upsignal-Timestamp"
EVENT_HEADER = "Upsignal-Event"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_VERSION = "v1"


def sign(secret_key: bytes, timestamp: int, body: bytes) -> str:
    """Return the signature header value for a body signed at ``timestamp``.

    >>> sign(b"s3cret", 1700000000, b'{"id":"a"}')
    'v1=5728bde1960c1b8c3818c4173f2e693a41ee30ba692cc5f4d3f887212743c3d8'
    """
    digest = hmac.new(secret_key, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def verify_signature(
    secret_key: bytes, body: bytes, timestamp: str, signature: str, tolerance: float = 300, now: float | None = None
) -> bool:
    """Check a request's signature and that its timestamp is within ``tolerance`` seconds of now."""
    if not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False
    return hmac.compare_digest(sign(secret_key, int(timestamp), body), signature)


def webhook_body(alert: Alert) -> bytes:
    """Return the JSON body, which is the same bytes on every attempt at the alert."""
    return orjson.dumps(
        {"id": alert.key, "type": f"tier.{alert.event}", "data": alert.to_dict()},
        option=orjson.OPT_SORT_KEYS,
    )


class WebhookDestination(Destination):
    """POSTs each alert to ``url``; see the module docstring for the headers."""

    kind = "webhook"
    # Alerts per deliver call; each alert is still its own request.
    max_batch_size = 50
    # A receiver's limit is its own: set rate_limit in upsignal.yaml if it has one.
    default_rate_limit = None

    def __init__(self, settings: WebhookSettings, dry_run: bool = False):
        super().__init__(settings, dry_run)
        self.secret_key = b"" if dry_run else secret(settings.secret_env).encode()
        self.sender = HttpSender(self.name, settings.timeout_seconds, self.rate_limit)

    def headers(self, alert: Alert, body: bytes) -> dict[str, str]:
        timestamp = int(time.time())
        signature = f"<{SIGNATURE_VERSION}=HMAC-SHA256 keyed with ${self.settings.secret_env}>"
        if not self.dry_run:
            signature = sign(self.secret_key, timestamp, body)
        return {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: signature,
            IDEMPOTENCY_HEADER: alert.key,
            EVENT_HEADER: f"tier.{alert.event}",
        }

    def deliver(self, alerts: Sequence[Alert]) -> list[Outcome]:
        return deliver_each(alerts, self._post)

    def _post(self, alert: Alert) -> Outcome:
        body = webhook_body(alert)
        try:
            response = self.sender.send("POST", self.settings.url, content=body, headers=self.headers(alert, body))
        except httpx.TransportError as error:
            return transport_failure(error)
        return classify_status(response) or Delivered()

    def plan(self, alerts: Sequence[Alert]) -> list[PlannedRequest]:
        return [
            PlannedRequest("POST", self.settings.url, self.headers(alert, webhook_body(alert)), orjson.loads(webhook_body(alert)))
            for alert in alerts
        ]

    def close(self) -> None:
        self.sender.close()
