"""Alerts with their usage context, built from the snapshot that caused each transition.

The reasons are the explanation's sentences (upsignal.scoring.explain), so an
alert says what ``upsignal explain`` says about that run. The snapshot never
changes, so every attempt at an alert carries the same content.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from upsignal.alerts.outbox import OutboxRow
from upsignal.config import AlertSettings
from upsignal.scoring.explain import explanation_from_row, model_of_run
from upsignal.signals.model import parse_window
from upsignal.store import Store

SNAPSHOT_SQL = """
SELECT o.alert_id, t.from_tier, t.as_of AS transition_as_of,
       s.account_id, a.name, a.domain, a.traits, s.score, s.tier, t.as_of AS tier_since, r.as_of,
       s.run_id, r.model_version, s.signals, s.points,
       (SELECT p.score FROM account_scores AS p JOIN score_runs AS pr ON pr.run_id = p.run_id
        WHERE p.account_id = s.account_id AND pr.as_of < r.as_of
        ORDER BY pr.as_of DESC, p.run_id DESC LIMIT 1) AS previous_score
FROM alert_outbox AS o
JOIN transitions AS t ON t.transition_id = o.transition_id
JOIN account_scores AS s ON s.run_id = t.run_id AND s.account_id = t.account_id
JOIN score_runs AS r ON r.run_id = s.run_id
LEFT JOIN accounts AS a ON a.account_id = s.account_id
WHERE o.alert_id IN ({ids})
"""

ACTIVE_USERS_SQL = """
WITH targets AS (SELECT col0 AS account_id, col1::TIMESTAMP AS since, col2::TIMESTAMP AS until
                 FROM (VALUES {values}))
SELECT t.account_id, u.name, u.email, count(*) AS events
FROM targets AS t
JOIN user_keys AS k ON k.account_id = t.account_id
JOIN events AS e ON COALESCE(e.user_id, 'anon:' || e.anonymous_id) = k.user_key
JOIN users AS u ON u.user_id = k.user_id
WHERE e.timestamp > t.since AND e.timestamp <= t.until AND e.type IN ('track', 'page', 'screen')
GROUP BY t.account_id, u.user_id, u.name, u.email
ORDER BY t.account_id, events DESC, u.user_id
"""


@dataclass(frozen=True)
class ActiveUser:
    """A user of the account and how many events they sent in the active-users window."""

    name: str | None
    email: str | None
    events: int


@dataclass
class Alert:
    """One outbox row ready to send: the transition and the account's usage context.

    ``key`` is the idempotency key: the same on every attempt, unique per
    transition and destination. ``top_users`` is empty unless the project
    allows personal data in alerts.
    """

    alert_id: int
    key: str
    destination: str
    event: str  # entered or left
    attempt: int
    transition_id: int
    account_id: str
    name: str | None
    domain: str | None
    url: str
    score: float
    previous_score: float | None
    tier: str
    from_tier: str | None
    pql_tier: str
    as_of: datetime
    model_version: str
    reasons: list[str]
    signals: dict[str, float | None]
    active_users: int
    active_users_window: str
    top_users: list[ActiveUser] = field(default_factory=list)

    @property
    def display_name(self) -> str:
        return self.name or self.domain or self.account_id

    @property
    def is_pql(self) -> bool:
        return self.tier == self.pql_tier

    def to_dict(self) -> dict[str, Any]:
        """Return the alert as JSON-ready data, the same on every attempt (so without ``attempt``)."""
        data = asdict(self)
        del data["attempt"]
        data["as_of"] = self.as_of.isoformat() + "Z"
        return data


def account_url(base_url: str, account_id: str) -> str:
    """Link to the account's API record.

    >>> account_url("https://upsignal.example.com/", "user:42")
    'https://upsignal.example.com/api/accounts/user%3A42'
    """
    return f"{base_url.rstrip('/')}/api/accounts/{quote(account_id, safe='')}"


def build_alerts(store: Store, rows: Sequence[OutboxRow], settings: AlertSettings, base_url: str) -> list[Alert]:
    """Build an Alert for each outbox row, in the rows' order."""
    if not rows:
        return []
    ids = ", ".join(str(int(row.alert_id)) for row in rows)
    snapshots = {item["alert_id"]: item for item in store.rows(SNAPSHOT_SQL.format(ids=ids))}
    users = active_users(store, list(snapshots.values()), settings.active_users_window)
    alerts = []
    for row in rows:
        snapshot = snapshots[row.alert_id]
        explanation = explanation_from_row(store, snapshot)
        model = model_of_run(store, snapshot["model_version"])
        account_users = users.get(snapshot["account_id"], [])
        alerts.append(Alert(
            alert_id=row.alert_id, key=row.alert_key, destination=row.destination, event=row.event,
            attempt=row.attempt, transition_id=row.transition_id, account_id=explanation.account_id,
            name=explanation.name, domain=explanation.domain,
            url=account_url(base_url, explanation.account_id), score=explanation.score,
            previous_score=explanation.previous_score, tier=explanation.tier,
            from_tier=snapshot["from_tier"], pql_tier=model.pql_tier, as_of=snapshot["transition_as_of"],
            model_version=explanation.model_version, reasons=explanation.reasons[: settings.top_reasons],
            signals=explanation.signals, active_users=len(account_users),
            active_users_window=settings.active_users_window,
            top_users=account_users[: settings.top_users] if settings.personal_data else [],
        ))
    return alerts


def active_users(store: Store, snapshots: list[dict[str, Any]], window: str) -> dict[str, list[ActiveUser]]:
    """Users with events in the window before each snapshot's as-of time, most active first."""
    length = parse_window(window)
    if not snapshots or length is None:
        return {}
    targets = [(item["account_id"], item["as_of"] - length, item["as_of"]) for item in snapshots]
    values = ", ".join(["(?, ?, ?)"] * len(targets))
    found: dict[str, list[ActiveUser]] = {}
    params = [cell for target in targets for cell in target]
    for row in store.rows(ACTIVE_USERS_SQL.format(values=values), params):
        found.setdefault(row["account_id"], []).append(ActiveUser(row["name"], row["email"], row["events"]))
    return found
