"""Explanations: why an account has its score, as data."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import orjson

from upsignal.errors import NotFoundError
from upsignal.scoring.sentences import format_number, signal_sentence
from upsignal.signals.model import ScoringModel, parse_model
from upsignal.store import Store


@dataclass
class Contribution:
    """One rule that gave points: the signal value, the step threshold it reached, the points."""

    rule: str
    points: float
    signal: str | None = None
    value: float | None = None
    threshold: float | None = None
    trait: str | None = None
    sentence: str = ""


@dataclass
class Explanation:
    account_id: str
    name: str | None
    domain: str | None
    score: float
    tier: str
    tier_since: datetime | None
    as_of: datetime
    run_id: int
    model_version: str
    previous_score: float | None
    contributions: list[Contribution]
    signals: dict[str, float | None]
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _reached_threshold(steps: list, value: float | None) -> float | None:
    reached = [step.at for step in steps if value is not None and value >= step.at]
    return reached[-1] if reached else None


def contributions(model: ScoringModel, signals: dict[str, Any], points: dict[str, float], traits: dict[str, Any]) -> list[Contribution]:
    """List the rules and fit rules that gave points, highest first."""
    found = []
    for rule in model.rules:
        awarded = points.get(rule.name) or 0.0
        if awarded:
            value = signals.get(rule.signal)
            found.append(Contribution(
                rule=rule.name, points=awarded, signal=rule.signal, value=value,
                threshold=_reached_threshold(rule.steps, value),
                sentence=signal_sentence(model, rule.signal, signals),
            ))
    for rule in model.fit:
        awarded = points.get(rule.name) or 0.0
        if awarded:
            trait_value = traits.get(rule.trait)
            found.append(Contribution(
                rule=rule.name, points=awarded, trait=rule.trait,
                sentence=f"{rule.trait.replace('_', ' ')} is {format_number(trait_value) if isinstance(trait_value, (int, float)) else trait_value}",
            ))
    found.sort(key=lambda item: -item.points)
    return found


_MODELS: dict[str, ScoringModel] = {}


def model_of_run(store: Store, model_version: str) -> ScoringModel:
    """Return the model a run used, parsed from the YAML stored with the run."""
    if model_version not in _MODELS:
        text = store.scalar("SELECT yaml FROM models WHERE model_version = ?", [model_version])
        if text is None:
            raise NotFoundError(f"model version {model_version} is not in the store")
        _MODELS[model_version] = parse_model(text, f"stored model {model_version}")
    return _MODELS[model_version]


def explanation_from_row(store: Store, row: dict[str, Any]) -> Explanation:
    """Build an explanation from a row of account_state joined with its snapshot and account."""
    model = model_of_run(store, row["model_version"])
    signals = orjson.loads(row["signals"])
    points = orjson.loads(row["points"])
    traits = orjson.loads(row["traits"]) if row.get("traits") else {}
    found = contributions(model, signals, points, traits)
    return Explanation(
        account_id=row["account_id"], name=row["name"], domain=row["domain"],
        score=row["score"], tier=row["tier"], tier_since=row.get("tier_since"),
        as_of=row["as_of"], run_id=row["run_id"], model_version=row["model_version"],
        previous_score=row.get("previous_score"), contributions=found, signals=signals,
        reasons=[item.sentence for item in found],
    )


CURRENT_STATE_SQL = """
SELECT st.account_id, a.name, a.domain, a.traits, st.score, st.tier, st.tier_since, st.as_of,
       st.run_id, r.model_version, s.signals, s.points,
       (SELECT p.score FROM account_scores AS p JOIN score_runs AS pr ON pr.run_id = p.run_id
        WHERE p.account_id = st.account_id AND pr.as_of < st.as_of
        ORDER BY pr.as_of DESC, p.run_id DESC LIMIT 1) AS previous_score
FROM account_state AS st
JOIN account_scores AS s ON s.run_id = st.run_id AND s.account_id = st.account_id
JOIN score_runs AS r ON r.run_id = st.run_id
LEFT JOIN accounts AS a ON a.account_id = st.account_id
"""


def explain_account(store: Store, account_id: str) -> Explanation:
    """Explain an account's current score; NotFoundError if it was never scored."""
    rows = store.rows(CURRENT_STATE_SQL + " WHERE st.account_id = ?", [account_id])
    if not rows:
        raise NotFoundError(
            f"account {account_id!r} has no score; check the id with 'upsignal accounts' or run 'upsignal score'"
        )
    return explanation_from_row(store, rows[0])


def list_explanations(store: Store, tier: str | None = None, limit: int | None = None) -> list[Explanation]:
    """Current explanations, highest score first, optionally for one tier."""
    sql, params = CURRENT_STATE_SQL, []
    if tier:
        sql += " WHERE st.tier = ?"
        params.append(tier)
    sql += " ORDER BY st.score DESC, st.account_id"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return [explanation_from_row(store, row) for row in store.rows(sql, params)]
