"""An incoming webhook that follows Slack's documented behaviour.

POST JSON with ``text`` and/or ``blocks`` to the webhook path: 200 ``ok``;
``invalid_payload``/``no_text``/``invalid_blocks`` as 400; an unknown path
``no_service`` as 404; beyond about one message per second (with a short
burst), 429 with Retry-After (https://api.slack.com/docs/rate-limits).
"""

from __future__ import annotations

import re
import time
from collections import Counter, deque

from tests.vendors.base import Request, Response, VendorServer

PATH = "/services/T0000AAAA/B0000BBBB/XXXXXXXXXXXXXXXXXXXXXXXX"
ALERT_KEY = re.compile(r"upsignal alert (\S+)")


class SlackServer(VendorServer):
    def __init__(self, burst: int | None = None, window: float = 1.0):
        super().__init__()
        self.messages: list[dict] = []
        self.burst = burst  # messages allowed per window; None disables the limit
        self.window = window
        self.recent: deque[float] = deque()
        self.rejected_keys: set[str] = set()  # answer 400 invalid_blocks to messages about these alerts

    @property
    def webhook_url(self) -> str:
        return self.url + PATH

    def handle(self, request: Request) -> Response:
        if request.method != "POST" or request.path != PATH:
            return Response(404, "no_service")
        if self.burst is not None and self._over_limit():
            return Response(429, "rate_limited", {"Retry-After": "1"})
        try:
            message = request.json()
        except ValueError:
            return Response(400, "invalid_payload")
        if not isinstance(message, dict) or not (message.get("text") or message.get("blocks")):
            return Response(400, "no_text")
        if any(key in request.body.decode() for key in self.rejected_keys):
            return Response(400, "invalid_blocks")
        blocks = message.get("blocks", [])
        if not isinstance(blocks, list) or len(blocks) > 50 or not all(self._valid_block(block) for block in blocks):
            return Response(400, "invalid_blocks")
        self.messages.append(message)
        return Response(200, "ok")

    def _over_limit(self) -> bool:
        now = time.monotonic()
        while self.recent and now - self.recent[0] >= self.window:
            self.recent.popleft()
        if len(self.recent) >= self.burst:
            return True
        self.recent.append(now)
        return False

    @staticmethod
    def _valid_block(block: dict) -> bool:
        kind = block.get("type")
        if kind == "header":
            return block["text"]["type"] == "plain_text" and len(block["text"]["text"]) <= 150
        if kind == "section":
            return len(block["text"]["text"]) <= 3000
        return kind in {"actions", "context", "divider"}

    def alert_counts(self) -> Counter[str]:
        """Messages per alert key, read from each message's context block."""
        found: Counter[str] = Counter()
        for message in self.messages:
            for block in message.get("blocks", []):
                for element in block.get("elements", []) if block.get("type") == "context" else []:
                    match = ALERT_KEY.search(element.get("text", ""))
                    if match:
                        found[match.group(1)] += 1
        return found
