"""A receiver of upsignal's signed webhooks that does what docs/alerts.md tells receivers to do.

It verifies the signature with its own HMAC code (not upsignal's), rejects
stale timestamps, and processes each Idempotency-Key once, answering 200 to
repeats.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import Counter

from tests.vendors.base import Request, Response, VendorServer

PATH = "/hooks/upsignal"


class WebhookReceiver(VendorServer):
    def __init__(self, secret: bytes, tolerance: float = 300):
        super().__init__()
        self.secret = secret
        self.tolerance = tolerance
        self.processed: dict[str, dict] = {}
        self.effects: Counter[str] = Counter()  # times each key was processed (must stay at 1)
        self.received: Counter[str] = Counter()  # verified requests per key, repeats included
        self.rejected_keys: set[str] = set()  # answer 422 for these alert keys

    def handle(self, request: Request) -> Response:
        if request.method != "POST" or request.path != PATH:
            return Response(404, {"error": "not found"})
        timestamp = request.headers.get("Upsignal-Timestamp", "")
        signature = request.headers.get("Upsignal-Signature", "")
        expected = "v1=" + hmac.new(self.secret, timestamp.encode() + b"." + request.body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, signature):
            return Response(401, {"error": "invalid signature"})
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > self.tolerance:
            return Response(401, {"error": "stale timestamp"})
        key = request.headers["Idempotency-Key"]
        if key in self.rejected_keys:
            return Response(422, {"error": "unprocessable alert"})
        self.received[key] += 1
        if key not in self.processed:
            self.processed[key] = request.json()
            self.effects[key] += 1
        return Response(200, {"status": "ok"})
