"""The destination interface: what HubSpot, Salesforce, Slack, the webhook and any
third-party destination implement.

A destination turns a batch of alerts into requests to one external system and
reports, per alert, how it went. Everything else (claiming outbox rows,
backoff, dead-lettering, rate-limit pauses, recording attempts) is the
dispatcher's job.

Contract for implementations:

- ``deliver(alerts)`` returns exactly one outcome per alert, in the same order.
  ``Delivered`` means the external system has the alert's effect. ``Retry``
  means it may not, and trying again later could succeed: timeouts, dropped
  connections, 408, 429 and 5xx. ``Failed`` means trying again cannot help
  (other 4xx, invalid data), so the alert goes to the dead letters.
- An alert may be delivered again after a crash or a lost response, with the
  same ``alert.key``. Delivering it twice must have the effect of delivering it
  once: upsert by a key derived from the alert, or send ``alert.key`` as an
  idempotency key the receiver honours. A destination that cannot guarantee
  this sets ``idempotent = False`` and says so in its documentation.
- On a rate limit, return ``Retry(..., rate_limited=True, retry_after=...)``
  for the alert that hit it and for every alert not yet sent, and stop sending:
  the dispatcher pauses the whole destination until ``retry_after``.
- Catch transport errors (``httpx.TransportError``) per request and turn them
  into ``Retry``. An exception that escapes ``deliver`` is treated as a
  retryable failure of the whole batch and logged with its traceback.
- ``plan(alerts)`` returns the requests ``deliver`` would send, with secrets
  replaced by the names of the variables holding them, and sends nothing.
- Log one INFO line per external request at most, never a secret, an email
  or a payload; payloads belong at DEBUG.

Register a destination class under the ``upsignal.destinations`` entry point
group (the built-in ones are registered the same way) or name it in
upsignal.yaml as ``type: package.module:ClassName``. A third-party class
receives a CustomDestinationSettings whose ``options`` it validates itself,
for example with its own pydantic model.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from upsignal.config import RateLimitSettings

if TYPE_CHECKING:
    from upsignal.alerts.context import Alert


@dataclass(frozen=True)
class Delivered:
    """The destination has the alert's effect; ``external_id`` is its record there, if any."""

    external_id: str | None = None


@dataclass(frozen=True)
class Retry:
    """The alert may not have arrived and a later attempt could succeed.

    ``retry_after`` is in seconds, from a Retry-After header or the vendor's
    documented window. ``rate_limited`` marks a rate limit, which pauses the
    destination and does not count against the alert's retry budget.
    """

    reason: str
    retry_after: float | None = None
    status_code: int | None = None
    rate_limited: bool = False


@dataclass(frozen=True)
class Failed:
    """The destination rejected the alert for good; it goes to the dead letters with ``reason``."""

    reason: str
    status_code: int | None = None


Outcome = Delivered | Retry | Failed


@dataclass(frozen=True)
class PlannedRequest:
    """A request a dry run would send. Secrets appear as ``<$VARIABLE>``."""

    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "url": self.url, "headers": self.headers, "body": self.body}


class Destination(abc.ABC):
    """Base class of every destination; see the module docstring for the contract.

    Subclasses set ``kind``, ``max_batch_size`` (the vendor's limit of records
    per call), ``default_rate_limit`` (the vendor's documented limit, cited
    where it is set) and ``idempotent``. ``dry_run`` destinations must not read
    secrets or send anything.
    """

    kind: ClassVar[str]
    max_batch_size: ClassVar[int] = 1
    default_rate_limit: ClassVar[RateLimitSettings | None] = None
    idempotent: ClassVar[bool] = True

    def __init__(self, settings: Any, dry_run: bool = False):
        self.settings = settings
        self.name: str = settings.name
        self.dry_run = dry_run

    @property
    def batch_size(self) -> int:
        """Alerts per ``deliver`` call: the configured size, capped at the vendor's maximum."""
        return min(self.settings.batch_size or self.max_batch_size, self.max_batch_size)

    @property
    def rate_limit(self) -> RateLimitSettings | None:
        return self.settings.rate_limit or self.default_rate_limit

    @abc.abstractmethod
    def deliver(self, alerts: Sequence[Alert]) -> list[Outcome]:
        """Send the alerts; return one outcome per alert, in order."""

    @abc.abstractmethod
    def plan(self, alerts: Sequence[Alert]) -> list[PlannedRequest]:
        """Return the requests ``deliver`` would send, sending nothing."""

    def close(self) -> None:
        """Release connections; the dispatcher calls it once when it stops."""


def deliver_each(alerts: Sequence[Alert], post: Callable[[Alert], Outcome]) -> list[Outcome]:
    """Send alerts one request each, for vendors without batch calls.

    After a rate-limited response the rest of the batch gets the same outcome
    without being sent, so the dispatcher waits before trying any of them again.
    """
    outcomes: list[Outcome] = []
    for alert in alerts:
        outcome = post(alert)
        outcomes.append(outcome)
        if isinstance(outcome, Retry) and outcome.rate_limited:
            outcomes.extend([outcome] * (len(alerts) - len(outcomes)))
            break
    return outcomes
