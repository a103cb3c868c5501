"""Compile a scoring model into one SQL query per as-of time.

The query is written in DuckDB's dialect and transpiled by SQLGlot for other
engines, so DuckDB, Spark and a warehouse run the same logic. Its result has
one row per account: ``account_id``, one column per signal (and
``<signal>__previous`` for previous-window values), one ``points__<rule>``
column per rule and fit rule, and ``score``.

Window bounds are literals computed in Python for the as-of time, and every
aggregate reads only events at or before it.
"""

from __future__ import annotations

from datetime import datetime

import sqlglot
from sqlglot import exp

from upsignal.signals.model import (
    AGGREGATE_TYPES,
    Condition,
    CountSignal,
    DistinctUsersSignal,
    EventFilter,
    FitRule,
    PropertySignal,
    RatioSignal,
    Rule,
    ScoringModel,
    TrendSignal,
)
from upsignal.signals.windows import Bounds, window_bounds

PREVIOUS_SUFFIX = "__previous"
POINTS_PREFIX = "points__"
ACTIVITY_TYPES = ("track", "page", "screen")


def literal(value: object) -> str:
    """Render a Python value as a SQL literal."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, (int, float)):
        return repr(float(value))
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.isoformat(sep=' ')}'"
    return exp.Literal.string(str(value)).sql(dialect="duckdb")


def _json_text(column: str, path: str) -> str:
    return f"({column} ->> {literal('$.' + path)})"


def _json_number(column: str, path: str) -> str:
    return f"TRY_CAST({_json_text(column, path)} AS DOUBLE)"


def _condition(condition: Condition, column: str = "properties") -> str:
    text = _json_text(column, condition.property)
    number = _json_number(column, condition.property)
    for operator, value in (("gt", ">"), ("gte", ">="), ("lt", "<"), ("lte", "<=")):
        if getattr(condition, operator) is not None:
            return f"{number} {value} {literal(getattr(condition, operator))}"
    if condition.in_ is not None:
        return f"{text} IN ({', '.join(literal(_as_text(v)) for v in condition.in_)})"
    if condition.equals is not None:
        return _equals(text, number, condition.equals)
    return f"({text} IS NULL OR NOT ({_equals(text, number, condition.not_equals)}))"


def _as_text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _equals(text: str, number: str, value: object) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{number} = {literal(value)}"
    return f"{text} = {literal(_as_text(value))}"


def _bounds(bounds: Bounds) -> str:
    lower = ">=" if bounds.lower_inclusive else ">"
    upper = "<=" if bounds.upper_inclusive else "<"
    return f"timestamp {lower} {literal(bounds.lower)} AND timestamp {upper} {literal(bounds.upper)}"


def _event_filter(signal: EventFilter) -> list[str]:
    terms = []
    if signal.events:
        terms.append(f"event_name IN ({', '.join(literal(name) for name in signal.events)})")
    else:
        terms.append(f"type IN ({', '.join(literal(name) for name in ACTIVITY_TYPES)})")
    terms.extend(_condition(condition) for condition in signal.where)
    return terms


def _aggregate(signal: EventFilter, bounds: Bounds) -> str:
    condition = " AND ".join([*_event_filter(signal), _bounds(bounds)])
    if isinstance(signal, CountSignal):
        return f"COUNT(CASE WHEN {condition} THEN 1 END)"
    if isinstance(signal, DistinctUsersSignal):
        return f"COUNT(DISTINCT CASE WHEN {condition} THEN user_id END)"
    assert isinstance(signal, PropertySignal)
    if signal.type == "distinct":
        return f"COUNT(DISTINCT CASE WHEN {condition} THEN {_json_text('properties', signal.property)} END)"
    value = _json_number("properties", signal.property)
    matched = f"{condition} AND {value} IS NOT NULL"
    if signal.type == "last":
        # NOTE: two matching events at the same microsecond make 'last' pick either value.
        return f"ARG_MAX(CASE WHEN {matched} THEN {value} END, CASE WHEN {matched} THEN timestamp END)"
    return f"{signal.type.upper()}(CASE WHEN {matched} THEN {value} END)"


def _filled(name: str, signal: EventFilter) -> str:
    """Counts of nothing are 0; sums, maxima and last values of nothing stay NULL."""
    if isinstance(signal, (CountSignal, DistinctUsersSignal)) or signal.type == "distinct":
        return f"COALESCE(g.{name}, 0)"
    return f"g.{name}"


def _derived(signal: RatioSignal | TrendSignal, model: ScoringModel) -> str:
    if isinstance(signal, TrendSignal):
        return f"CAST({signal.of} AS DOUBLE) / NULLIF({signal.of}{PREVIOUS_SUFFIX}, 0)"
    denominator = signal.denominator
    if isinstance(denominator, str):
        denominator = f"NULLIF({denominator}, 0)"
    else:
        denominator = literal(denominator) if denominator else "NULL"
    scale = " * 100.0" if signal.percent else ""
    return f"CAST({signal.numerator} AS DOUBLE){scale} / {denominator}"


def _rule_points(rule: Rule) -> str:
    branches = " ".join(
        f"WHEN {rule.signal} >= {literal(step.at)} THEN {literal(step.points)}"
        for step in reversed(rule.steps)
    )
    return f"CASE {branches} ELSE 0.0 END"


def _fit_points(rule: FitRule) -> str:
    if rule.at_least is not None:
        test = f"{_json_number('traits', rule.trait)} >= {literal(rule.at_least)}"
    else:
        test = _condition(Condition.model_validate({"property": rule.trait, "equals": rule.equals, "in": rule.in_}), "traits")
    return f"CASE WHEN {test} THEN {literal(rule.points)} ELSE 0.0 END"


def signal_columns(model: ScoringModel) -> list[str]:
    """Names of the signal columns in the query result, previous-window values included."""
    columns = []
    for name in model.signals:
        columns.append(name)
        if model.needs_previous(name):
            columns.append(name + PREVIOUS_SUFFIX)
    return columns


def points_columns(model: ScoringModel) -> list[str]:
    return [POINTS_PREFIX + rule.name for rule in [*model.rules, *model.fit]]


def compile_scoring_query(
    model: ScoringModel, as_of: datetime, dialect: str = "duckdb", accounts: str | None = None
) -> str:
    """Return the SQL that computes every account's signals, points and score as of a time.

    It reads the tables ``events``, ``user_keys`` and ``accounts`` (see the store schema).
    ``accounts`` names a table or view with an ``account_id`` column: the query
    then scores only those accounts, with the same values a full query gives them.
    """
    only_events = only_accounts = ""
    if accounts is not None:
        only_events = f" AND k.account_id IN (SELECT account_id FROM {accounts})"
        only_accounts = f"\n  WHERE a.account_id IN (SELECT account_id FROM {accounts})"
    aggregates, earliest = [], as_of
    for name, signal in model.signals.items():
        if not isinstance(signal, AGGREGATE_TYPES):
            continue
        current, previous = window_bounds(signal.window, as_of, model.timezone, model.week_start)
        aggregates.append(f"{_aggregate(signal, current)} AS {name}")
        earliest = min(earliest, current.lower)
        if model.needs_previous(name):
            aggregates.append(f"{_aggregate(signal, previous)} AS {name}{PREVIOUS_SUFFIX}")
            earliest = min(earliest, previous.lower)

    filled = []
    for name, signal in model.signals.items():
        if isinstance(signal, AGGREGATE_TYPES):
            filled.append(f"{_filled(name, signal)} AS {name}")
            if model.needs_previous(name):
                filled.append(f"{_filled(name + PREVIOUS_SUFFIX, signal)} AS {name}{PREVIOUS_SUFFIX}")
    derived = [
        f"{_derived(signal, model)} AS {name}"
        for name, signal in model.signals.items()
        if not isinstance(signal, AGGREGATE_TYPES)
    ]
    points = [f"{_rule_points(rule)} AS {POINTS_PREFIX}{rule.name}" for rule in model.rules]
    points += [f"{_fit_points(rule)} AS {POINTS_PREFIX}{rule.name}" for rule in model.fit]
    total = " + ".join(POINTS_PREFIX + rule.name for rule in [*model.rules, *model.fit]) or "0.0"

    aggregate_list = ",\n    ".join(["account_id", *aggregates])
    sql = f"""
WITH resolved AS (
  SELECT k.account_id, k.user_id, e.type, COALESCE(e.event, e.name) AS event_name,
         e.timestamp, e.properties
  FROM events AS e
  JOIN user_keys AS k ON k.user_key = COALESCE(e.user_id, 'anon:' || e.anonymous_id)
  WHERE e.timestamp >= {literal(earliest)} AND e.timestamp <= {literal(as_of)}{only_events}
),
aggregated AS (
  SELECT
    {aggregate_list}
  FROM resolved
  GROUP BY account_id
),
filled AS (
  SELECT a.account_id, a.traits{''.join(', ' + column for column in filled)}
  FROM accounts AS a
  LEFT JOIN aggregated AS g ON g.account_id = a.account_id{only_accounts}
),
signals AS (
  SELECT *{''.join(', ' + column for column in derived)}
  FROM filled
),
scored AS (
  SELECT *{''.join(', ' + column for column in points)}
  FROM signals
)
SELECT account_id, {', '.join([*signal_columns(model), *points_columns(model)])},
       LEAST({literal(model.max_score)}, GREATEST(0.0, {total})) AS score
FROM scored
"""
    if dialect == "duckdb":
        return sql.strip()
    return sqlglot.transpile(sql, read="duckdb", write=dialect, pretty=True)[0]
