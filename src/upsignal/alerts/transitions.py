"""Record tier transitions caused by a scoring run, with the model's cooldown.

A transition enters ``to_tier`` and leaves ``from_tier``. Hysteresis is already in
the tiers themselves (see upsignal.scoring.tiers), so a score that wobbles inside
a tier's band causes no transition at all. The cooldown works on top: an account
that re-enters a tier within ``model.cooldown`` of leaving it records the
transition with ``entry_suppressed``, and leaving a tier whose entry was
suppressed records ``exit_suppressed``, so destinations see entries and exits
in pairs. Suppressed halves raise no alert.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from upsignal.alerts.outbox import enqueue_alerts
from upsignal.config import AlertSettings, load_project
from upsignal.signals.model import ScoringModel, parse_window
from upsignal.store import Store

TRANSITIONS_SQL = """
INSERT INTO transitions (transition_id, run_id, account_id, from_tier, to_tier, score, as_of,
                         entry_suppressed, exit_suppressed)
WITH changed AS (
  SELECT s.run_id, s.account_id, st.tier AS from_tier, s.tier AS to_tier, s.score
  FROM account_scores AS s
  LEFT JOIN account_state AS st ON st.account_id = s.account_id
  WHERE s.run_id = $run_id
    AND CASE WHEN st.account_id IS NULL THEN s.tier <> $lowest_tier
             ELSE st.as_of <= $as_of AND st.tier <> s.tier END
)
SELECT nextval('transition_ids'), c.run_id, c.account_id, c.from_tier, c.to_tier, c.score, $as_of,
       EXISTS (SELECT 1 FROM transitions AS p
               WHERE p.account_id = c.account_id AND p.from_tier = c.to_tier
                 AND p.as_of > $cooldown_start AND p.as_of <= $as_of),
       COALESCE((SELECT p.entry_suppressed FROM transitions AS p
                 WHERE p.account_id = c.account_id AND p.to_tier = c.from_tier AND p.as_of <= $as_of
                 ORDER BY p.as_of DESC, p.transition_id DESC LIMIT 1), false)
FROM changed AS c
"""


def cooldown_length(model: ScoringModel) -> timedelta:
    """Return the model's cooldown; the calendar ``week`` counts as 7 days here.

    >>> from upsignal.signals.model import parse_model
    >>> model = parse_model("name: m\\nsignals: {}\\ntiers: [{name: cold, min: 0}, {name: pql, min: 80}]\\ncooldown: 3d")
    >>> cooldown_length(model)
    datetime.timedelta(days=3)
    """
    return parse_window(model.cooldown) or timedelta(days=7)


def record_transitions(
    store: Store,
    model: ScoringModel,
    run_id: int,
    as_of: datetime,
    alerts: AlertSettings | None = None,
) -> int:
    """Insert this run's transitions and the outbox rows of the alerts they raise; return the count.

    Must run inside the scoring transaction, before account_state is updated, so
    the transitions and their alerts are stored with the snapshot or not at all.
    Runs for an as-of time earlier than an account's state cause no transition,
    and an account's first score causes one only above the lowest tier.
    ``alerts`` defaults to the project file's alerts section.
    """
    inserted = store.conn.execute(
        TRANSITIONS_SQL,
        {
            "run_id": run_id,
            "as_of": as_of,
            "lowest_tier": model.tiers[0].name,
            "cooldown_start": as_of - cooldown_length(model),
        },
    ).fetchone()[0]
    if inserted:
        settings = alerts if alerts is not None else load_project().alerts
        enqueue_alerts(store, model, run_id, settings.destinations)
    return inserted
