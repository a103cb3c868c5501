"""Accounts whose scores the alert tests set directly, through real events and real scoring.

The model scores an account by the last ``level`` property of its ``Level Set``
events, so ``set_score(store, "acme", 85, at)`` followed by ``score(store, at)``
gives acme the score 85 as of ``at`` (one point more if it ran reports that week).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from tests.conftest import add_events
from upsignal.config import AlertSettings
from upsignal.identity import resolve_accounts
from upsignal.scoring import score_accounts
from upsignal.signals.model import parse_model
from upsignal.store import Store

LEVELS = (10, 40, 60, 70, 78, 80, 85, 88, 90, 95)
MODEL_YAML = f"""
name: alert-tests
signals:
  level:
    type: last
    event: Level Set
    property: level
    window: 90d
    sentence: "reached level {{value}}"
  reports_run:
    type: count
    event: Report Run
    window: 7d
    compare_previous: true
    sentence: "ran {{value}} reports {{window}}"
rules:
  - signal: level
    steps: [{', '.join(f'{{at: {level}, points: {level}}}' for level in LEVELS)}]
  - signal: reports_run
    steps: [{{at: 1, points: 1}}]
tiers:
  - {{name: cold, min: 0}}
  - {{name: hot, min: 50}}
  - {{name: pql, min: 80, exit_below: 70}}
pql_tier: pql
cooldown: 7d
"""
MODEL = parse_model(MODEL_YAML, "alert test model")
START = datetime(2024, 3, 1, 9)
_messages = iter(range(1, 10**9))


def iso(moment: datetime) -> str:
    return moment.isoformat() + "Z"


def add_account(store: Store, account_id: str, users: int = 1, at: datetime = START, resolve: bool = True) -> None:
    """Add an account (a group with a name and domain) with ``users`` users, and resolve accounts."""
    records: list[dict[str, Any]] = []
    for number in range(users):
        user = f"{account_id}-u{number}"
        records.append({"type": "identify", "userId": user, "timestamp": iso(at), "messageId": f"m{next(_messages)}",
                        "traits": {"name": f"User {number} of {account_id}", "email": f"u{number}@{account_id}.example"}})
        records.append({"type": "group", "userId": user, "groupId": account_id, "timestamp": iso(at),
                        "messageId": f"m{next(_messages)}",
                        "traits": {"name": account_id.title(), "domain": f"{account_id}.example"}})
    add_events(store, *records)
    if resolve:
        resolve_accounts(store)


def set_score(store: Store, account_id: str, level: int, at: datetime) -> None:
    """Send the event that makes the account's score ``level`` from ``at`` on."""
    assert level in LEVELS, f"use one of {LEVELS}"
    add_events(store, {"type": "track", "event": "Level Set", "userId": f"{account_id}-u0",
                       "properties": {"level": level}, "timestamp": iso(at - timedelta(seconds=1)),
                       "messageId": f"m{next(_messages)}"})


def add_activity(store: Store, account_id: str, user: int, reports: int, at: datetime) -> None:
    add_events(store, *[
        {"type": "track", "event": "Report Run", "userId": f"{account_id}-u{user}",
         "timestamp": iso(at - timedelta(minutes=index + 1)), "messageId": f"m{next(_messages)}"}
        for index in range(reports)
    ])


def score(store: Store, at: datetime, alerts: AlertSettings | dict | None = None) -> int:
    """Score every account as of ``at``; return the number of transitions."""
    if isinstance(alerts, dict):
        alerts = AlertSettings.model_validate(alerts)
    return score_accounts(store, MODEL, MODEL_YAML, at, alerts=alerts or AlertSettings()).transitions
