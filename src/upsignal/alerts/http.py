"""HTTP plumbing shared by the destinations: rate limiting, Retry-After, error classes."""

from __future__ import annotations

import collections
import email.utils
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from upsignal.alerts.destination import Failed, Outcome, Retry
from upsignal.config import RateLimitSettings

log = logging.getLogger(__name__)

USER_AGENT = "upsignal-alerts"


class RateLimiter:
    """Allows at most ``requests`` calls in any window of ``seconds``, blocking until one is allowed.

    A sliding log of the last ``requests`` calls, so unlike a token bucket it
    never lets twice the limit through across a window boundary. Each entry is
    the time the call finished (see ``finished``): the vendor saw the request
    before that, so its own window count can never exceed ours however long
    the requests take in transit. ``None`` means no limit.
    """

    def __init__(
        self,
        limit: RateLimitSettings | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.limit = limit
        self.clock = clock
        self.sleep = sleep
        self._starts: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait for a slot; return the seconds waited."""
        if self.limit is None:
            return 0.0
        waited = 0.0
        with self._lock:
            while len(self._starts) >= self.limit.requests:
                free_at = self._starts[0] + self.limit.seconds
                now = self.clock()
                if now >= free_at:
                    self._starts.popleft()
                    continue
                self.sleep(free_at - now)
                waited += free_at - now
            self._starts.append(self.clock())
        return waited

    def finished(self) -> None:
        """Move the latest call's entry to now, the time its response (or error) arrived."""
        if self.limit is None:
            return
        with self._lock:
            if self._starts:
                self._starts[-1] = self.clock()


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Parse a Retry-After header: delay-seconds or an HTTP date; None if absent or invalid.

    >>> retry_after_seconds("120")
    120.0
    >>> retry_after_seconds("Wed, 21 Oct 2015 07:28:30 GMT", datetime(2015, 10, 21, 7, 28, tzinfo=UTC))
    30.0
    >>> retry_after_seconds("soon") is None
    True
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (moment - (now or datetime.now(UTC))).total_seconds())


def snippet(response: httpx.Response, limit: int = 200) -> str:
    """Return the start of a response body on one line, for error messages."""
    text = " ".join(response.text.split())
    return text[:limit] + ("..." if len(text) > limit else "")


def classify_status(response: httpx.Response) -> Outcome | None:
    """Map an HTTP status to an outcome: None for 2xx, Retry for 408, 429 and 5xx, else Failed."""
    code = response.status_code
    if 200 <= code < 300:
        return None
    retry_after = retry_after_seconds(response.headers.get("Retry-After"))
    reason = f"HTTP {code}: {snippet(response)}"
    if code == 429:
        return Retry(reason, retry_after, code, rate_limited=True)
    if code == 408 or code >= 500:
        return Retry(reason, retry_after, code)
    return Failed(reason, code)


def transport_failure(error: httpx.TransportError) -> Retry:
    """Return the retry for a timeout or a dropped connection, after which the request may or may not have arrived."""
    if isinstance(error, httpx.TimeoutException):
        return Retry(f"timed out ({type(error).__name__})")
    return Retry(f"connection failed ({type(error).__name__}: {error})")


class HttpSender:
    """An httpx client that waits for the destination's rate limit before each request."""

    def __init__(self, destination: str, timeout: float, limit: RateLimitSettings | None):
        self.destination = destination
        self.limiter = RateLimiter(limit)
        self.client = httpx.Client(timeout=timeout, headers={"User-Agent": USER_AGENT})

    def send(self, method: str, url: str, label: str | None = None, **kwargs: Any) -> httpx.Response:
        """Send one request; transport errors propagate as httpx.TransportError.

        ``label`` replaces the URL in the DEBUG log, for URLs that are secrets.
        """
        self.limiter.acquire()
        started = time.perf_counter()
        try:
            response = self.client.request(method, url, **kwargs)
        finally:
            self.limiter.finished()
        log.debug(
            "%s %s %s -> %d in %.3f s: %s", self.destination, method, label or url.split("?")[0],
            response.status_code, time.perf_counter() - started, kwargs.get("json") or kwargs.get("content"),
        )
        return response

    def close(self) -> None:
        self.client.close()
