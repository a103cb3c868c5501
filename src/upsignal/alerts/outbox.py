"""The alert outbox: rows written with the transitions, claimed and settled by dispatchers.

Life of a row: ``pending`` -> (claim) ``delivering`` -> ``delivered``, back to
``pending`` with a later ``next_attempt_at`` (retry), or ``dead`` (permanent
failure, or too many retryable ones). Claiming commits before any request is
sent and settling commits after the response, so a crash in between leaves the
row ``delivering``; ``recover`` puts such rows back to ``pending`` and the next
attempt re-sends them with the same ``alert_key``, which the destinations use to
make the repeat harmless.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from upsignal.config import DestinationSettings
from upsignal.errors import ConfigError, NotFoundError
from upsignal.events.schema import utc_now
from upsignal.signals.model import ScoringModel
from upsignal.store import Store

STATUSES = ("pending", "delivering", "delivered", "dead")

# Identifies this process in claimed_by. DuckDB lets one process at a time open a
# store file for writing, so a row claimed by another process id is orphaned.
PROCESS_ID = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

# How long a claim holds before a dispatcher in the same process may take the row over.
CLAIM_LEASE = timedelta(minutes=10)

ENQUEUE_SQL = """
INSERT INTO alert_outbox (alert_id, alert_key, transition_id, destination, event, status,
                          next_attempt_at, created_at)
SELECT nextval('alert_ids'), gen_random_uuid()::VARCHAR, t.transition_id, $destination,
       CASE WHEN $entered AND list_contains($tiers, t.to_tier) AND NOT t.entry_suppressed
            THEN 'entered' ELSE 'left' END,
       'pending', $now, $now
FROM transitions AS t
WHERE t.run_id = $run_id
  AND (($entered AND list_contains($tiers, t.to_tier) AND NOT t.entry_suppressed)
       OR ($left AND list_contains($tiers, t.from_tier) AND NOT t.exit_suppressed))
"""


def enqueue_alerts(store: Store, model: ScoringModel, run_id: int, destinations: Sequence[DestinationSettings]) -> int:
    """Insert an outbox row per transition of the run and enabled destination subscribed to it."""
    known = [tier.name for tier in model.tiers]
    total = 0
    for destination in destinations:
        if not destination.enabled:
            continue
        tiers = destination.tiers or [model.pql_tier]
        unknown = [tier for tier in tiers if tier not in known]
        if unknown:
            raise ConfigError(
                f"destination {destination.name} subscribes to tier {unknown[0]!r}, which model"
                f" {model.name} does not have; use one of {', '.join(known)}"
            )
        total += store.conn.execute(ENQUEUE_SQL, {
            "destination": destination.name, "tiers": tiers, "run_id": run_id, "now": utc_now(),
            "entered": "entered" in destination.events, "left": "left" in destination.events,
        }).fetchone()[0]
    return total


@dataclass(frozen=True)
class OutboxRow:
    """A claimed outbox row: what a dispatcher needs to build and send one alert."""

    alert_id: int
    alert_key: str
    transition_id: int
    destination: str
    event: str
    attempt: int
    failures: int


@dataclass(frozen=True)
class Settlement:
    """How one attempt ended, as the dispatcher decided it."""

    alert_id: int
    attempt: int
    outcome: str  # delivered, retry, rate_limited, dead
    status_code: int | None = None
    error: str | None = None
    retry_at: datetime | None = None
    external_id: str | None = None

    @property
    def status(self) -> str:
        return {"delivered": "delivered", "dead": "dead"}.get(self.outcome, "pending")


def _values(rows: list[tuple[Any, ...]]) -> tuple[str, list[Any]]:
    """A VALUES list with one placeholder per cell, and its flattened parameters."""
    width = len(rows[0])
    row_sql = "(" + ", ".join(["?"] * width) + ")"
    return ", ".join([row_sql] * len(rows)), [cell for row in rows for cell in row]


class Outbox:
    """Claims, settles and lists outbox rows through one store connection.

    ``owner`` goes into ``claimed_by``; it starts with this process's id so that
    ``recover`` can tell the rows of a crashed process from those in flight here.
    """

    def __init__(self, store: Store, owner: str | None = None):
        self.store = store
        self.owner = owner or f"{PROCESS_ID}/{uuid.uuid4().hex[:6]}"

    def claim(self, destination: str, limit: int, now: datetime) -> list[OutboxRow]:
        """Mark up to ``limit`` due rows of a destination as delivering and record the attempts."""
        with self.store.transaction() as conn:
            claimed = conn.execute(
                """
                UPDATE alert_outbox SET status = 'delivering', attempts = attempts + 1,
                       claimed_by = $owner, claimed_until = $until
                WHERE alert_id IN (SELECT alert_id FROM alert_outbox
                                   WHERE destination = $destination AND status = 'pending'
                                     AND next_attempt_at <= $now
                                   ORDER BY next_attempt_at, alert_id LIMIT $limit)
                RETURNING alert_id, alert_key, transition_id, destination, event, attempts, failures
                """,
                {"owner": self.owner, "until": now + CLAIM_LEASE, "destination": destination,
                 "now": now, "limit": limit},
            ).fetchall()
            rows = sorted((OutboxRow(*row) for row in claimed), key=lambda row: row.alert_id)
            if rows:
                values, params = _values([(row.alert_id, row.attempt, self.owner, now) for row in rows])
                conn.execute(
                    f"INSERT INTO alert_attempts (alert_id, attempt, claimed_by, started_at, outcome)"
                    f" SELECT *, 'in_flight' FROM (VALUES {values})",
                    params,
                )
        return rows

    def settle(self, settlements: Sequence[Settlement], now: datetime) -> None:
        """Store the outcome of each claimed row and its attempt, in one transaction."""
        if not settlements:
            return
        rows = [
            (s.alert_id, s.attempt, s.status, s.outcome, s.status_code, s.error, s.retry_at, s.external_id,
             1 if s.outcome == "retry" else 0)
            for s in settlements
        ]
        values, params = _values(rows)
        changes = f"""(SELECT col0 AS alert_id, col1 AS attempt, col2 AS status, col3 AS outcome,
                              col4::INTEGER AS status_code, col5::VARCHAR AS error,
                              col6::TIMESTAMP AS retry_at, col7::VARCHAR AS external_id, col8 AS failed
                       FROM (VALUES {values}))"""
        with self.store.transaction() as conn:
            conn.execute(
                f"""
                UPDATE alert_outbox AS o SET status = c.status, failures = o.failures + c.failed,
                       next_attempt_at = COALESCE(c.retry_at, o.next_attempt_at),
                       delivered_at = CASE WHEN c.status = 'delivered' THEN ?::TIMESTAMP END,
                       external_id = COALESCE(c.external_id, o.external_id),
                       last_error = c.error, claimed_by = NULL, claimed_until = NULL
                FROM {changes} AS c
                WHERE o.alert_id = c.alert_id AND o.attempts = c.attempt AND o.claimed_by = ?
                """,
                [now, *params, self.owner],
            )
            conn.execute(
                f"""
                UPDATE alert_attempts AS a SET finished_at = ?::TIMESTAMP, outcome = c.outcome,
                       status_code = c.status_code, error = c.error, retry_at = c.retry_at
                FROM {changes} AS c
                WHERE a.alert_id = c.alert_id AND a.attempt = c.attempt
                """,
                [now, *params],
            )

    def recover(self, now: datetime) -> int:
        """Return rows left ``delivering`` by a crashed process (or an expired claim) to ``pending``."""
        orphaned = "(NOT starts_with(o.claimed_by, $process || '/') OR o.claimed_until < $now)"
        with self.store.transaction() as conn:
            conn.execute(
                f"""
                UPDATE alert_attempts AS a SET outcome = 'interrupted', finished_at = $now,
                       error = 'the dispatcher stopped before the outcome was recorded'
                FROM alert_outbox AS o
                WHERE o.alert_id = a.alert_id AND o.attempts = a.attempt AND a.outcome = 'in_flight'
                  AND o.status = 'delivering' AND {orphaned}
                """,
                {"process": PROCESS_ID, "now": now},
            )
            return conn.execute(
                f"""
                UPDATE alert_outbox AS o SET status = 'pending', next_attempt_at = $now,
                       claimed_by = NULL, claimed_until = NULL
                WHERE o.status = 'delivering' AND {orphaned}
                """,
                {"process": PROCESS_ID, "now": now},
            ).fetchone()[0]

    def next_due(self, destination: str) -> datetime | None:
        """When the destination's earliest pending row becomes due, or None if it has none."""
        return self.store.scalar(
            "SELECT min(next_attempt_at) FROM alert_outbox WHERE destination = ? AND status = 'pending'",
            [destination],
        )

    def due_rows(self, destination: str, limit: int, now: datetime) -> list[OutboxRow]:
        """The rows ``claim`` would take, without claiming them (for dry runs)."""
        found = self.store.conn.execute(
            """
            SELECT alert_id, alert_key, transition_id, destination, event, attempts + 1, failures
            FROM alert_outbox WHERE destination = ? AND status = 'pending' AND next_attempt_at <= ?
            ORDER BY next_attempt_at, alert_id LIMIT ?
            """,
            [destination, now, limit],
        ).fetchall()
        return [OutboxRow(*row) for row in found]


LIST_SQL = """
SELECT o.alert_id, o.destination, o.event, o.status, t.account_id, t.from_tier, t.to_tier,
       t.score, t.as_of, o.attempts, o.failures, o.next_attempt_at, o.created_at, o.delivered_at,
       o.external_id, o.last_error, o.alert_key, o.transition_id
FROM alert_outbox AS o JOIN transitions AS t ON t.transition_id = o.transition_id
"""


def list_alerts(
    store: Store, status: str | None = None, destination: str | None = None, limit: int = 50
) -> list[dict[str, Any]]:
    """Outbox rows with their transitions, newest first, optionally filtered."""
    conditions, params = [], []
    if status:
        conditions.append("o.status = ?")
        params.append(status)
    if destination:
        conditions.append("o.destination = ?")
        params.append(destination)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return store.rows(f"{LIST_SQL}{where} ORDER BY o.alert_id DESC LIMIT {int(limit)}", params)


def alert_attempts(store: Store, alert_id: int) -> list[dict[str, Any]]:
    """Every recorded attempt of one alert, oldest first; NotFoundError for an unknown id."""
    if not store.scalar("SELECT count(*) FROM alert_outbox WHERE alert_id = ?", [alert_id]):
        raise NotFoundError(f"alert {alert_id} is not in the outbox; list alerts with 'upsignal alerts list'")
    return store.rows(
        "SELECT attempt, claimed_by, started_at, finished_at, outcome, status_code, error, retry_at"
        " FROM alert_attempts WHERE alert_id = ? ORDER BY attempt",
        [alert_id],
    )


def retry_alerts(
    store: Store, now: datetime, alert_ids: Sequence[int] = (), destination: str | None = None
) -> int:
    """Make dead or pending alerts due now, with a fresh retry budget; return how many changed.

    With no ids, every dead alert (of ``destination``, if given) is retried.
    Delivered and in-flight alerts are left alone: sending a delivered alert
    again is not a retry.
    """
    conditions = ["status IN ('dead', 'pending')"] if alert_ids else ["status = 'dead'"]
    params: list[Any] = [now]
    if alert_ids:
        conditions.append(f"alert_id IN ({', '.join('?' * len(alert_ids))})")
        params.extend(alert_ids)
    if destination:
        conditions.append("destination = ?")
        params.append(destination)
    with store.transaction() as conn:
        return conn.execute(
            f"UPDATE alert_outbox SET status = 'pending', next_attempt_at = ?, failures = 0"
            f" WHERE {' AND '.join(conditions)}",
            params,
        ).fetchone()[0]


def status_counts(store: Store) -> dict[str, dict[str, int]]:
    """Row counts per destination and status."""
    counts: dict[str, dict[str, int]] = {}
    for row in store.rows("SELECT destination, status, count(*) AS n FROM alert_outbox GROUP BY ALL"):
        counts.setdefault(row["destination"], {})[row["status"]] = row["n"]
    return counts
