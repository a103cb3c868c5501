"""Record tier transitions caused by a scoring run."""

from __future__ import annotations

from datetime import datetime

from upsignal.signals.model import ScoringModel
from upsignal.store import Store


def record_transitions(store: Store, model: ScoringModel, run_id: int, as_of: datetime) -> int:
    """Insert a transition for each account whose tier in this run differs from its current state.

    Must run inside the scoring transaction, before account_state is updated.
    Runs for an as-of time earlier than an account's state cause no transition,
    and an account's first score causes one only above the lowest tier.
    """
    return store.conn.execute(
        """
        INSERT INTO transitions
        SELECT nextval('transition_ids'), s.run_id, s.account_id, st.tier, s.tier, s.score, ?
        FROM account_scores AS s
        LEFT JOIN account_state AS st ON st.account_id = s.account_id
        WHERE s.run_id = ?
          AND CASE WHEN st.account_id IS NULL THEN s.tier <> ?
                   ELSE st.as_of <= ? AND st.tier <> s.tier END
        """,
        [as_of, run_id, model.tiers[0].name, as_of],
    ).fetchone()[0]
