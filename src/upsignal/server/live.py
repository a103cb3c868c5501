"""Live scoring: every few seconds, re-resolve and re-score only the accounts that new events touched.

A pass has two transactions. The first re-resolves the identities that the
ingest loader queued in live_touched (see resolve_touched) and moves the
accounts they affect to live_pending_accounts. The second is an ordinary
``score_accounts`` run restricted to those accounts, so its snapshot, tier
changes and account state are written exactly as ``upsignal score`` writes
them. Both queues live in the store, so a crash between or during passes
loses no account that needs a score. At worst an account is scored twice.

Every ``full_interval`` seconds a full pass also scores every account, so an
account without new events still moves through its windows and can leave a tier.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from upsignal.config import AlertSettings
from upsignal.events.schema import utc_now
from upsignal.identity import resolve_accounts
from upsignal.scoring.run import score_accounts
from upsignal.server.resolve_touched import build_links, resolve_touched
from upsignal.server.writer import lower_thread_priority
from upsignal.signals.model import ScoringModel
from upsignal.store import Store

log = logging.getLogger(__name__)


class StoreCursor(Store):
    """Another connection to an open store's database, for use by one other thread."""

    def __init__(self, store: Store):  # noqa: super().__init__ would open the file a second time
        self.path = store.path
        self.conn = store.conn.cursor()
        self.conn.execute("SET TimeZone = 'UTC'")


@dataclass
class LivePass:
    """Summary of one live pass."""

    as_of: datetime
    accounts: int
    run_id: int | None
    seconds: float


class LiveScorer:
    """Re-scores touched accounts on a background thread every ``interval`` seconds."""

    def __init__(
        self,
        store: Store,
        model: ScoringModel,
        model_text: str,
        interval: float = 5.0,
        clock: Callable[[], datetime] = utc_now,
        alerts: AlertSettings | None = None,
        full_interval: float | None = None,
    ):
        self.store = StoreCursor(store)
        self.model = model
        self.model_text = model_text
        self.interval = interval
        self.clock = clock
        self.alerts = alerts
        self.full_interval = full_interval
        self._last_full = time.monotonic()
        self.passes = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="upsignal-live-scorer", daemon=True)

    def prepare(self) -> None:
        """Rebuild users and accounts from all events once, so the incremental passes start from a full resolution."""
        started = time.perf_counter()
        resolve_accounts(self.store)
        build_links(self.store)
        log.info("live scoring ready after a full resolution in %.2f s", time.perf_counter() - started)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=120)
        self.store.close()

    def run_pass(self, as_of: datetime | None = None) -> LivePass:
        """Re-resolve the touched identities and score the affected accounts as of a time (default: now)."""
        with self._lock:
            started = time.perf_counter()
            as_of = as_of or self.clock()
            store = self.store
            with store.transaction():
                up_to = store.scalar("SELECT max(seq) FROM live_touched")
                if up_to is not None:
                    resolve_touched(store, up_to)
            store.conn.execute(
                "CREATE OR REPLACE TEMP TABLE live_scoring_accounts AS"
                " SELECT DISTINCT account_id FROM live_pending_accounts"
            )
            accounts = store.scalar("SELECT count(*) FROM live_scoring_accounts")
            run_id = None
            if accounts:
                run = score_accounts(store, self.model, self.model_text, as_of, alerts=self.alerts,
                                     only_accounts="live_scoring_accounts")
                run_id = run.run_id
                store.conn.execute(
                    "DELETE FROM live_pending_accounts"
                    " WHERE account_id IN (SELECT account_id FROM live_scoring_accounts)"
                )
            store.conn.execute("DROP TABLE live_scoring_accounts")
            self.passes += 1
            done = LivePass(as_of, accounts, run_id, time.perf_counter() - started)
            if accounts:
                log.info("live pass scored %d touched accounts as of %s in %.2f s (run %s)",
                         accounts, as_of.isoformat(), done.seconds, run_id)
            return done

    def run_full_pass(self, as_of: datetime | None = None) -> LivePass:
        """Score every account, as ``upsignal score`` does, so accounts without new events age out of their windows."""
        with self._lock:
            started = time.perf_counter()
            run = score_accounts(self.store, self.model, self.model_text, as_of or self.clock(), alerts=self.alerts)
            self._last_full = time.monotonic()
            done = LivePass(run.as_of, run.accounts, run.run_id, time.perf_counter() - started)
            log.info("full live pass scored %d accounts as of %s in %.2f s (run %s)",
                     run.accounts, run.as_of.isoformat(), done.seconds, run.run_id)
            return done

    def _full_pass_due(self) -> bool:
        return self.full_interval is not None and time.monotonic() - self._last_full >= self.full_interval

    def _loop(self) -> None:
        lower_thread_priority()
        while not self._stop.wait(self.interval):
            try:
                self.run_pass()
                if self._full_pass_due():
                    self.run_full_pass()
            except Exception:  # a failed pass must not end live scoring; its queues stay for the next
                log.exception("live scoring pass failed; retrying in %.1f s", self.interval)
