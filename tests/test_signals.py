"""Signals compiled to SQL against a plain Python reference, and their windows."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlglot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import add_events
from upsignal.identity import resolve_accounts
from upsignal.signals.compiler import compile_scoring_query
from upsignal.signals.model import parse_model
from upsignal.signals.windows import week_start

MODEL = """
name: property-test
timezone: Asia/Kolkata
week_start: sunday
signals:
  a_count: {type: count, event: A, window: 7d, compare_previous: true}
  a_with_x: {type: count, event: A, where: [{property: p, equals: x}], window: 7d}
  a_not_x: {type: count, event: A, where: [{property: p, not_equals: x}], window: 7d}
  b_big: {type: count, event: B, where: [{property: n, gte: 5}], window: 24h}
  b_in: {type: count, event: [A, B], where: [{property: p, in: [x, y]}], window: 7d}
  users: {type: distinct_users, window: 7d}
  n_sum: {type: sum, event: B, property: n, window: 7d}
  n_max: {type: max, event: B, property: n, window: 24h}
  n_last: {type: last, event: B, property: n, window: 7d}
  p_distinct: {type: distinct, property: p, window: 7d}
  a_week: {type: count, event: A, window: week, compare_previous: true}
  a_per_b: {type: ratio, numerator: a_count, denominator: n_sum}
  a_share: {type: ratio, numerator: a_count, denominator: 4, percent: true}
  a_trend: {type: trend, of: a_count}
tiers: [{name: cold, min: 0}, {name: pql, min: 50}]
"""

AS_OF = datetime(2024, 3, 14, 18, 30)  # a Thursday; the Kolkata week began Saturday 18:30 UTC


def _instants() -> list[datetime]:
    """Times on and around every window boundary of MODEL as of AS_OF."""
    start = week_start(AS_OF, "Asia/Kolkata", "sunday")
    edges = [
        AS_OF, AS_OF - timedelta(days=7), AS_OF - timedelta(days=14), AS_OF - timedelta(hours=24),
        start, week_start(start - timedelta(microseconds=1), "Asia/Kolkata", "sunday"),
        week_start(start - timedelta(microseconds=1), "Asia/Kolkata", "sunday") + (AS_OF - start),
    ]
    found = set()
    for edge in edges:
        for offset in (-1, 0, 1):
            found.add(edge + timedelta(microseconds=offset))
    found.update(AS_OF - timedelta(hours=hours) for hours in (1, 30, 100, 200, 400))
    return sorted(found)


INSTANTS = _instants()

event_strategy = st.fixed_dictionaries({
    "user": st.integers(0, 5),
    "event": st.sampled_from(["A", "B", "C"]),
    "moment": st.sampled_from(INSTANTS),
    "p": st.one_of(st.none(), st.sampled_from(["x", "y", "z"])),
    "n": st.one_of(st.none(), st.integers(-3, 12), st.floats(0, 10, allow_nan=False).map(lambda v: round(v, 2))),
})


def _account_of(user: int) -> str:
    return f"acct{user % 3}"


def _records(events: list[dict]) -> list[dict]:
    records = [
        {"type": "group", "userId": f"u{user}", "groupId": _account_of(user), "timestamp": "2000-01-01T00:00:00Z"}
        for user in range(6)
    ]
    for index, item in enumerate(events):
        properties = {}
        if item["p"] is not None:
            properties["p"] = item["p"]
        if item["n"] is not None:
            properties["n"] = item["n"]
        records.append({
            "type": "track", "messageId": f"m{index}", "userId": f"u{item['user']}", "event": item["event"],
            "properties": properties, "timestamp": item["moment"].isoformat() + "Z",
        })
    return records


def _in(moment: datetime, lower: datetime, upper: datetime, lower_inclusive: bool = False, upper_inclusive: bool = True) -> bool:
    above = moment >= lower if lower_inclusive else moment > lower
    below = moment <= upper if upper_inclusive else moment < upper
    return above and below


def _kolkata_week_start(moment: datetime) -> datetime:
    """Start of the Sunday-based week in Kolkata, computed day by day (independent of week_start)."""
    zone = ZoneInfo("Asia/Kolkata")
    local = moment.replace(tzinfo=ZoneInfo("UTC")).astimezone(zone)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    while day.weekday() != 6:
        day -= timedelta(days=1)
    return day.replace(tzinfo=zone).astimezone(ZoneInfo("UTC")).replace(tzinfo=None)


def reference(events: list[dict]) -> dict[str, dict[str, float | None]]:
    """The model's signals computed directly in Python."""
    week, day = timedelta(days=7), timedelta(hours=24)
    this_week = _kolkata_week_start(AS_OF)
    last_week = _kolkata_week_start(this_week - timedelta(days=1))
    result = {}
    for account in ("acct0", "acct1", "acct2"):
        mine = [e for e in events if _account_of(e["user"]) == account]

        def select(names, lower, upper=AS_OF, lower_inclusive=False, upper_inclusive=True, mine=mine):
            return [e for e in mine if e["event"] in names and _in(e["moment"], lower, upper, lower_inclusive, upper_inclusive)]

        numbers = lambda items: [float(e["n"]) for e in items if e["n"] is not None]  # noqa: E731
        a_now = select("A", AS_OF - week)
        a_before = select("A", AS_OF - 2 * week, AS_OF - week)
        b_week, b_day = select("B", AS_OF - week), select("B", AS_OF - day)
        a_count = len(a_now)
        n_sum = sum(numbers(b_week)) if numbers(b_week) else None
        last = [e for e in b_week if e["n"] is not None]
        result[account] = {
            "a_count": a_count,
            "a_count__previous": len(a_before),
            "a_with_x": sum(1 for e in a_now if e["p"] == "x"),
            "a_not_x": sum(1 for e in a_now if e["p"] != "x"),
            "b_big": sum(1 for e in b_day if e["n"] is not None and e["n"] >= 5),
            "b_in": sum(1 for e in select("AB", AS_OF - week) if e["p"] in ("x", "y")),
            "users": len({e["user"] for e in select("ABC", AS_OF - week)}),
            "n_sum": n_sum,
            "n_max": max(numbers(b_day)) if numbers(b_day) else None,
            "n_last_candidates": {float(e["n"]) for e in last if e["moment"] == max(x["moment"] for x in last)},
            "p_distinct": len({e["p"] for e in select("ABC", AS_OF - week) if e["p"] is not None}),
            "a_week": len(select("A", this_week, lower_inclusive=True)),
            "a_week__previous": len(select("A", last_week, last_week + (AS_OF - this_week), True, True)),
            "a_per_b": a_count / n_sum if n_sum else None,
            "a_share": a_count * 100.0 / 4,
            "a_trend": a_count / len(a_before) if a_before else None,
        }
    return result


@pytest.fixture(scope="module")
def model():
    return parse_model(MODEL)


def _computed(store, model) -> dict[str, dict]:
    cursor = store.conn.execute(compile_scoring_query(model, AS_OF))
    names = [column[0] for column in cursor.description]
    return {row[0]: dict(zip(names, row)) for row in cursor.fetchall()}


def _same(expected, actual) -> bool:
    if expected is None or actual is None:
        return expected is None and actual is None
    return abs(float(expected) - float(actual)) <= 1e-9 * max(1.0, abs(float(expected)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events=st.lists(event_strategy, max_size=40))
def test_sql_signals_match_python_reference(store, model, events):
    for table in ("events", "users", "accounts", "user_keys"):
        store.conn.execute(f"DELETE FROM {table}")
    add_events(store, *_records(events))
    resolve_accounts(store)

    computed = _computed(store, model)
    expected = reference(events)

    for account, values in expected.items():
        candidates = values.pop("n_last_candidates")
        for name, value in values.items():
            assert _same(value, computed[account][name]), (account, name, value, computed[account][name])
        if candidates:
            assert computed[account]["n_last"] in candidates
        else:
            assert computed[account]["n_last"] is None


def test_events_after_as_of_are_not_counted(store, model):
    add_events(store, *_records([
        {"user": 0, "event": "A", "moment": AS_OF, "p": None, "n": None},
        {"user": 0, "event": "A", "moment": AS_OF + timedelta(microseconds=1), "p": None, "n": None},
    ]))
    resolve_accounts(store)

    assert _computed(store, model)["acct0"]["a_count"] == 1


def test_rolling_window_excludes_its_start(store, model):
    add_events(store, *_records([
        {"user": 0, "event": "A", "moment": AS_OF - timedelta(days=7), "p": None, "n": None},
        {"user": 0, "event": "A", "moment": AS_OF - timedelta(days=7) + timedelta(microseconds=1), "p": None, "n": None},
    ]))
    resolve_accounts(store)

    row = _computed(store, model)["acct0"]
    assert row["a_count"] == 1
    assert row["a_count__previous"] == 1


def test_calendar_week_follows_time_zone_and_first_day():
    # 2024-03-14 18:30 UTC is Friday 00:00 in Kolkata; its Sunday-based week began
    # Sunday 2024-03-10 00:00 IST = Saturday 2024-03-09 18:30 UTC.
    assert week_start(AS_OF, "Asia/Kolkata", "sunday") == datetime(2024, 3, 9, 18, 30)
    assert week_start(AS_OF, "UTC", "monday") == datetime(2024, 3, 11)


@pytest.mark.parametrize("dialect", ["spark", "snowflake", "bigquery", "postgres", "duckdb"])
def test_query_transpiles_to_dialect(model, dialect):
    sql = compile_scoring_query(model, AS_OF, dialect)

    parsed = sqlglot.parse_one(sql, read=dialect)
    assert parsed.find(sqlglot.exp.Select) is not None
    assert "a_trend" in sql


def test_string_literals_are_escaped(store):
    model = parse_model("""
name: quotes
signals:
  odd: {type: count, event: "it's; DROP TABLE events; --", window: 7d}
tiers: [{name: cold, min: 0}, {name: pql, min: 1}]
""")
    add_events(store, {"type": "track", "userId": "u", "event": "it's; DROP TABLE events; --",
                       "timestamp": "2024-03-14T00:00:00Z", "context": {"groupId": "g"}})
    resolve_accounts(store)

    assert _computed(store, model)["g"]["odd"] == 1
    assert store.scalar("SELECT count(*) FROM events") == 1
