"""Score every account as of a time and store the snapshot.

One run is one transaction: the run row, every account's snapshot, the
transitions it causes and the new account state land together or not at all.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from upsignal.alerts.transitions import record_transitions
from upsignal.config import AlertSettings
from upsignal.events.schema import utc_now
from upsignal.scoring.tiers import tier_sql
from upsignal.signals.compiler import compile_scoring_query, literal, points_columns, signal_columns
from upsignal.signals.engines import DuckDBEngine
from upsignal.signals.model import ScoringModel
from upsignal.store import Store

log = logging.getLogger(__name__)


class Engine(Protocol):
    """See upsignal.signals.engines for the contract."""

    name: str

    def scores(self, model: ScoringModel, as_of: datetime) -> contextlib.AbstractContextManager[str]: ...


@dataclass
class ScoreRun:
    run_id: int
    as_of: datetime
    model_version: str
    accounts: int
    transitions: int
    seconds: float


def _struct(columns: list[str], prefix: str = "") -> str:
    fields = ", ".join(f"'{column.removeprefix(prefix)}': s.{column}" for column in columns)
    return f"to_json({{{fields}}})" if columns else "'{}'::JSON"


def store_model(store: Store, model: ScoringModel, yaml_text: str) -> None:
    store.conn.execute(
        "INSERT OR IGNORE INTO models VALUES (?, ?, ?, ?)",
        [model.version, model.name, yaml_text, utc_now()],
    )


def store_snapshot(store: Store, model: ScoringModel, run_id: int, as_of: datetime, source: str) -> int:
    """Insert account_scores for a run from ``source`` (a query or a registered relation).

    The tier keeps hysteresis against the account's latest tier before this
    as-of time: its current state when that is not newer, else (when an
    earlier time is scored again) its latest earlier snapshot.
    """
    previous = "LEFT JOIN account_state AS st ON st.account_id = s.account_id"
    previous_tier = f"CASE WHEN st.as_of <= {literal(as_of)} THEN st.tier END"
    if store.scalar("SELECT count(*) FROM account_state WHERE as_of > ?", [as_of]):
        previous += f"""
        LEFT JOIN (
            SELECT p.account_id, ARG_MAX(p.tier, {{'as_of': r.as_of, 'run_id': r.run_id}}) AS tier
            FROM account_scores AS p JOIN score_runs AS r ON r.run_id = p.run_id
            WHERE r.as_of < {literal(as_of)}
              AND p.account_id IN (SELECT account_id FROM account_state WHERE as_of > {literal(as_of)})
            GROUP BY p.account_id
        ) AS earlier ON earlier.account_id = s.account_id"""
        previous_tier = f"COALESCE({previous_tier}, earlier.tier)"
    return store.conn.execute(
        f"""
        INSERT INTO account_scores
        SELECT ?, s.account_id, s.score, {tier_sql(model, 's.score', previous_tier)},
               {_struct(signal_columns(model))}, {_struct(points_columns(model), 'points__')}
        FROM ({source}) AS s
        {previous}
        """,
        [run_id],
    ).fetchone()[0]


def update_state(store: Store, run_id: int, as_of: datetime) -> None:
    """Make this run's snapshot the current state of accounts whose state is not newer."""
    store.conn.execute(
        """
        INSERT OR REPLACE INTO account_state
        SELECT s.account_id, s.run_id, ?, s.score, s.tier,
               CASE WHEN st.tier = s.tier THEN st.tier_since ELSE ? END
        FROM account_scores AS s
        LEFT JOIN account_state AS st ON st.account_id = s.account_id
        WHERE s.run_id = ? AND (st.as_of IS NULL OR st.as_of <= ?)
        """,
        [as_of, as_of, run_id, as_of],
    )


@contextlib.contextmanager
def _subset_scores(model: ScoringModel, as_of: datetime, accounts: str) -> Iterator[str]:
    yield f"({compile_scoring_query(model, as_of, accounts=accounts)})"


def score_accounts(
    store: Store,
    model: ScoringModel,
    yaml_text: str,
    as_of: datetime | None = None,
    engine: Engine | None = None,
    alerts: AlertSettings | None = None,
    only_accounts: str | None = None,
) -> ScoreRun:
    """Score all resolved accounts as of a time (default: now) and store the run.

    The engine (default: DuckDB in the store itself) computes the scores; the
    snapshot, transitions, their alerts' outbox rows and account state are
    always written to the store. ``alerts`` names the destinations to alert
    [default: the project file's alerts section]. ``only_accounts`` names a
    table with an ``account_id`` column to score only those accounts, in the
    store's own DuckDB; the stored state of every other account stays as it was.
    """
    as_of = as_of or utc_now()
    engine = engine or DuckDBEngine()
    if only_accounts is not None and engine.name != DuckDBEngine.name:
        raise ValueError(f"scoring a subset of accounts needs the duckdb engine, not {engine.name}")
    started = time.perf_counter()
    scores = engine.scores(model, as_of) if only_accounts is None else _subset_scores(model, as_of, only_accounts)
    with scores as source, store.transaction():
        store_model(store, model, yaml_text)
        run_id = store.scalar("SELECT nextval('score_run_ids')")
        store.conn.execute(
            "INSERT INTO score_runs VALUES (?, ?, ?, ?, ?, NULL, NULL)",
            [run_id, as_of, model.version, engine.name, utc_now()],
        )
        accounts = store_snapshot(store, model, run_id, as_of, source)
        transitions = record_transitions(store, model, run_id, as_of, alerts)
        update_state(store, run_id, as_of)
        store.conn.execute(
            "UPDATE score_runs SET finished_at = ?, accounts = ? WHERE run_id = ?",
            [utc_now(), accounts, run_id],
        )
    run = ScoreRun(run_id, as_of, model.version, accounts, transitions, time.perf_counter() - started)
    log.info(
        "scored %d accounts as of %s with model %s in %.2f s (%d transitions)",
        run.accounts, as_of.isoformat(), model.version, run.seconds, transitions,
    )
    return run
