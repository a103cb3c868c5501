"""Deliver outbox rows to their destinations, one worker thread per destination.

One-shot (``upsignal alerts deliver``)::

    with Store(path) as store, Dispatcher(store, load_project()) as dispatcher:
        report = dispatcher.deliver(wait_seconds=60)

In a long-running server, create it in the thread that owns ``store`` and run
it in a background thread until shutdown::

    stop = threading.Event()
    dispatcher = Dispatcher(store, project)
    thread = threading.Thread(target=dispatcher.run_forever, args=(stop,), name="alerts")
    thread.start()
    ...
    stop.set()
    thread.join()
    dispatcher.close()

The dispatcher and each worker use their own DuckDB connections to the store
(``store.conn.cursor()``, made in the constructor), so the server may keep
using ``store`` in other threads.
"""

from __future__ import annotations

import copy
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from upsignal.alerts.context import build_alerts
from upsignal.alerts.destination import Delivered, Destination, Failed, Outcome, PlannedRequest, Retry
from upsignal.alerts.outbox import Outbox, OutboxRow, Settlement
from upsignal.alerts.registry import create_destination
from upsignal.config import AlertSettings, ProjectConfig
from upsignal.errors import ConfigError
from upsignal.events.schema import utc_now
from upsignal.store import Store

log = logging.getLogger(__name__)

# Backoff after a rate limit that came without a Retry-After, doubling per repeat.
RATE_LIMIT_BACKOFF_SECONDS = 1.0
# How often a long-running worker re-checks the outbox and takes over expired claims.
POLL_SECONDS = 1.0
RECOVER_EVERY_SECONDS = 60.0


def backoff_delay(failures: int, base: float, cap: float, rng: random.Random) -> float:
    """Seconds to wait after the ``failures``-th failure: exponential, capped, with jitter.

    The delay is drawn between half and all of ``min(cap, base * 2 ** (failures - 1))``,
    so retries of many alerts that failed together spread out.

    >>> rng = random.Random(7)
    >>> [round(backoff_delay(n, 30, 3600, rng)) for n in (1, 2, 3, 10)]
    [20, 35, 99, 1930]
    """
    ceiling = min(cap, base * 2 ** max(0, failures - 1))
    return rng.uniform(ceiling / 2, ceiling)


@dataclass
class RetryPolicy:
    """Turns outcomes into settlements: backoff, Retry-After, and when to give up."""

    max_attempts: int
    base_seconds: float
    max_seconds: float
    rng: random.Random

    def settle(self, row: OutboxRow, outcome: Outcome, now: datetime, rate_limit_streak: int = 1) -> Settlement:
        if isinstance(outcome, Delivered):
            return Settlement(row.alert_id, row.attempt, "delivered", external_id=outcome.external_id)
        if isinstance(outcome, Failed):
            return Settlement(row.alert_id, row.attempt, "dead", outcome.status_code, outcome.reason)
        if outcome.rate_limited:
            delay = self.wait(outcome.retry_after, rate_limit_streak, RATE_LIMIT_BACKOFF_SECONDS)
            return Settlement(row.alert_id, row.attempt, "rate_limited", outcome.status_code, outcome.reason,
                              now + timedelta(seconds=delay))
        failures = row.failures + 1
        if failures >= self.max_attempts:
            return Settlement(row.alert_id, row.attempt, "dead", outcome.status_code,
                              f"gave up after {failures} failed attempts; last error: {outcome.reason}")
        delay = self.wait(outcome.retry_after, failures, self.base_seconds)
        return Settlement(row.alert_id, row.attempt, "retry", outcome.status_code, outcome.reason,
                          now + timedelta(seconds=delay))

    def wait(self, retry_after: float | None, failures: int, base: float) -> float:
        """Retry-After plus up to 10 % jitter if given (never earlier), else exponential backoff."""
        if retry_after is not None:
            return retry_after * self.rng.uniform(1.0, 1.1)
        return backoff_delay(failures, base, self.max_seconds, self.rng)


def thread_store(store: Store) -> Store:
    """Return a Store on a new DuckDB connection to the same database, for use by one other thread."""
    view = copy.copy(store)
    view.conn = store.conn.cursor()
    return view


class DestinationWorker:
    """Claims, delivers and settles one destination's outbox rows, batch by batch."""

    def __init__(self, destination: Destination, store: Store, settings: AlertSettings, base_url: str,
                 policy: RetryPolicy, clock: Callable[[], datetime]):
        self.destination = destination
        self.store = thread_store(store)
        self.outbox = Outbox(self.store)
        self.settings = settings
        self.base_url = base_url
        self.policy = policy
        self.clock = clock
        self.paused_until: datetime | None = None
        self.rate_limit_streak = 0
        self.counts: Counter[str] = Counter()

    def run(self, stop: threading.Event, deadline: datetime | None) -> None:
        """Deliver until ``stop`` is set, or, with a deadline, until nothing is due before it."""
        last_recover = time.monotonic()
        while not stop.is_set():
            try:
                wait = self.step(deadline)
            except Exception:  # noqa: BLE001 - a long-running worker must outlive a store or destination bug
                if deadline is not None:
                    log.exception("alert worker for %s failed; stopping this delivery run", self.destination.name)
                    return
                log.exception("alert worker for %s failed; retrying in %.0f s", self.destination.name, POLL_SECONDS)
                wait = POLL_SECONDS
            if wait is None:
                return
            if deadline is None and time.monotonic() - last_recover > RECOVER_EVERY_SECONDS:
                self.outbox.recover(self.clock())
                last_recover = time.monotonic()
            if wait > 0:
                stop.wait(wait)

    def step(self, deadline: datetime | None) -> float | None:
        """Deliver one batch if one is due; return seconds to wait before the next step, None to finish."""
        now = self.clock()
        if self.paused_until and now < self.paused_until:
            if deadline is not None and self.paused_until > deadline:
                return None
            return min((self.paused_until - now).total_seconds(), POLL_SECONDS)
        rows = self.outbox.claim(self.destination.name, self.destination.batch_size, now)
        if rows:
            self.deliver_batch(rows)
            return 0.0
        next_due = self.outbox.next_due(self.destination.name)
        if deadline is not None and (next_due is None or next_due > deadline):
            return None
        if next_due is None:
            return POLL_SECONDS
        return min(POLL_SECONDS, max(0.0, (next_due - now).total_seconds()))

    def deliver_batch(self, rows: list[OutboxRow]) -> None:
        started = time.perf_counter()
        outcomes = self.send(rows)
        now = self.clock()
        limited = any(isinstance(outcome, Retry) and outcome.rate_limited for outcome in outcomes)
        self.rate_limit_streak = self.rate_limit_streak + 1 if limited else 0
        settlements = [self.policy.settle(row, outcome, now, self.rate_limit_streak)
                       for row, outcome in zip(rows, outcomes, strict=True)]
        self.outbox.settle(settlements, now)
        if limited:
            self.paused_until = max(s.retry_at for s in settlements if s.outcome == "rate_limited")
        summary = Counter(settlement.outcome for settlement in settlements)
        self.counts.update(summary)
        log.info(
            "delivered batch to %s: %d alerts, %s, %.3f s", self.destination.name, len(rows),
            ", ".join(f"{count} {outcome}" for outcome, count in sorted(summary.items())),
            time.perf_counter() - started,
        )
        dead = [settlement for settlement in settlements if settlement.outcome == "dead"]
        if dead:
            log.warning("%d alerts to %s are dead letters; first reason: %s",
                        len(dead), self.destination.name, dead[0].error)

    def send(self, rows: list[OutboxRow]) -> list[Outcome]:
        """Build the alerts and deliver them; any exception becomes a retry of the whole batch."""
        try:
            alerts = build_alerts(self.store, rows, self.settings, self.base_url)
            outcomes = self.destination.deliver(alerts)
            if len(outcomes) != len(rows):
                raise ValueError(f"{type(self.destination).__name__}.deliver returned {len(outcomes)}"
                                 f" outcomes for {len(rows)} alerts")
            return outcomes
        except Exception as error:  # noqa: BLE001 - the destination contract: an escaping error retries the batch
            log.exception("delivering %d alerts to %s raised", len(rows), self.destination.name)
            return [Retry(f"{type(error).__name__}: {error}")] * len(rows)

    def close(self) -> None:
        self.store.conn.close()


class Dispatcher:
    """Delivers the outbox to the enabled destinations configured in the project file.

    ``destinations`` limits it to some destination names. Creating a
    Dispatcher reads the destinations' secrets, so a missing variable fails
    here, before anything is claimed.
    """

    def __init__(
        self,
        store: Store,
        project: ProjectConfig,
        destinations: Sequence[str] = (),
        clock: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
    ):
        self.store = store
        self.settings = project.alerts
        self.base_url = project.alert_base_url()
        self.clock = clock
        self.policy = RetryPolicy(self.settings.max_attempts, self.settings.backoff_seconds,
                                  self.settings.max_backoff_seconds, rng or random.Random())
        self.destinations = [create_destination(item) for item in selected_destinations(self.settings, destinations)]
        # Connections are made here, in the caller's thread: DuckDB refuses a call on a
        # connection that another thread is using, and the caller may be using ``store``.
        self.outbox = Outbox(thread_store(store))
        self.workers = [DestinationWorker(destination, store, self.settings, self.base_url, self.policy, clock)
                        for destination in self.destinations]

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def recover(self) -> int:
        """Return rows left in flight by a stopped dispatcher to pending; log and return how many."""
        recovered = self.outbox.recover(self.clock())
        if recovered:
            log.warning("recovered %d alerts left in flight by a stopped dispatcher; they will be sent again",
                        recovered)
        return recovered

    def deliver(self, wait_seconds: float = 0.0, stop: threading.Event | None = None) -> dict[str, Counter[str]]:
        """Deliver every alert due now, and retries due within ``wait_seconds``; return outcome counts."""
        self.recover()
        return self._run(stop or threading.Event(), self.clock() + timedelta(seconds=wait_seconds))

    def run_forever(self, stop: threading.Event) -> None:
        """Deliver alerts as they become due until ``stop`` is set (for a server's background thread)."""
        self.recover()
        self._run(stop, None)

    def _run(self, stop: threading.Event, deadline: datetime | None) -> dict[str, Counter[str]]:
        for worker in self.workers:
            worker.counts = Counter()
        threads = [threading.Thread(target=worker.run, args=(stop, deadline), name=f"alerts-{worker.destination.name}")
                   for worker in self.workers]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                thread.join()
        except KeyboardInterrupt:
            # Let each worker settle its batch in flight before the caller closes the store.
            stop.set()
            for thread in threads:
                thread.join()
            raise
        return {worker.destination.name: worker.counts for worker in self.workers}

    def close(self) -> None:
        """Close the destinations' HTTP clients and the dispatcher's store connections."""
        for worker in self.workers:
            worker.close()
        for destination in self.destinations:
            destination.close()
        self.outbox.store.conn.close()


def selected_destinations(settings: AlertSettings, names: Sequence[str]) -> list:
    """Return the named destinations, or all enabled ones. Raise ConfigError for a name not configured."""
    configured = {item.name: item for item in settings.destinations}
    unknown = [name for name in names if name not in configured]
    if unknown:
        raise ConfigError(
            f"destination {unknown[0]!r} is not in the project file's alerts section"
            f" (configured: {', '.join(configured) or 'none'})"
        )
    return [configured[name] for name in names] if names else [item for item in configured.values() if item.enabled]


def plan_deliveries(
    store: Store, project: ProjectConfig, destinations: Sequence[str] = (), limit: int = 100
) -> dict[str, list[PlannedRequest]]:
    """Return, per destination, the requests a delivery would send for the alerts due now.

    Nothing is sent or claimed.
    """
    planned = {}
    now = utc_now()
    for settings in selected_destinations(project.alerts, destinations):
        destination = create_destination(settings, dry_run=True)
        rows = Outbox(store).due_rows(settings.name, limit, now)
        requests: list[PlannedRequest] = []
        for start in range(0, len(rows), destination.batch_size):
            batch = rows[start:start + destination.batch_size]
            requests.extend(destination.plan(build_alerts(store, batch, project.alerts, project.alert_base_url())))
        planned[settings.name] = requests
        destination.close()
    return planned
