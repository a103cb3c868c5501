"""One engine suite: every signal type, window, boundary and identity case on DuckDB and on Spark.

Each test runs once per engine and checks values worked out by hand below, so
both engines must reach the same numbers. The ``test_engines_agree_*`` tests
then compare every column of every table between the two.

The model's weeks start on Sunday in New York, which moved to daylight saving
time on Sunday 2024-03-10 at 02:00 local time:
- AS_OF (Wednesday 2024-03-13 15:00 UTC): the week began 2024-03-10 05:00 UTC
  (midnight EST); the week before began 2024-03-03 05:00 UTC.
- AS_OF_DST (Sunday 2024-03-17 05:00 UTC): the week began 04:00 UTC (midnight
  EDT), so the week before lasted 167 hours.
A week's previous window is the same stretch of the week before: as of AS_OF,
[03-03 05:00, 03-06 15:00] UTC; as of AS_OF_DST, [03-10 05:00, 03-10 06:00] UTC.
Rolling windows as of AS_OF: 7d is (03-06 15:00, AS_OF], the 7 days before
(02-28 15:00, 03-06 15:00], 24h (03-12 15:00, AS_OF], 28d (02-14 15:00, AS_OF].
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

import pytest

from tests.conftest import add_events
from tests.spark_fixtures import spark  # noqa: F401  (the session-wide SparkSession)
from upsignal.identity import resolve_accounts
from upsignal.signals.engines import DuckDBEngine
from upsignal.signals.engines.lake import export_events
from upsignal.signals.engines.spark import SparkEngine
from upsignal.signals.model import parse_model
from upsignal.store import Store

pytestmark = pytest.mark.slow

ENGINES = ("duckdb", "spark")
AS_OF = datetime(2024, 3, 13, 15, 0)
AS_OF_DST = datetime(2024, 3, 17, 5, 0)

MODEL_YAML = """
name: engine-parity
timezone: America/New_York
week_start: sunday
signals:
  big_reports:
    type: count
    event: Report Run
    where: [{property: rows, gt: 10}, {property: format, in: [csv, pdf]}]
    window: 7d
    compare_previous: true
  report_trend: {type: trend, of: big_reports}
  non_pdf_exports:
    type: count
    event: Export
    where: [{property: format, not_equals: pdf}]
    window: 7d
  paid_exports:
    type: count
    event: Export
    where: [{property: paid, equals: true}, {property: pages, equals: 3}]
    window: 7d
  daily_users: {type: distinct_users, window: 24h}
  seats: {type: sum, event: Seats Added, property: seats, window: 28d}
  max_rows: {type: max, event: Report Run, property: rows, window: 7d}
  last_storage: {type: last, event: Storage Measured, property: gb, window: 28d}
  projects_opened: {type: distinct, event: Project Opened, property: project_id, window: week}
  weekly_actions: {type: count, window: week, compare_previous: true}
  seats_per_user: {type: ratio, numerator: seats, denominator: daily_users}
  storage_used: {type: ratio, numerator: last_storage, denominator: 50, percent: true}
rules:
  - {signal: big_reports, steps: [{at: 2, points: 10}, {at: 4, points: 20}]}
  - {signal: report_trend, steps: [{at: 2, points: 5}]}
  - {signal: weekly_actions, steps: [{at: 5, points: 10}]}
  - {signal: storage_used, steps: [{at: 80, points: 15}]}
  - {signal: seats, steps: [{at: 10, points: 10}]}
fit:
  - {name: free_plan, trait: plan, in: [free, trial], points: 5}
  - {name: company_size, trait: employees, at_least: 20, points: 10}
tiers:
  - {name: cold, min: 0}
  - {name: pql, min: 30}
"""


def event(kind: str, when: str, user: str | None = None, anonymous: str | None = None, **fields) -> dict:
    record = {"type": kind, "timestamp": when + "Z", **fields}
    if user is not None:
        record["userId"] = user
    if anonymous is not None:
        record["anonymousId"] = anonymous
    return record


def track(name: str, when: str, user: str | None = None, anonymous: str | None = None,
          context: dict | None = None, **properties) -> dict:
    record = event("track", when, user, anonymous, event=name, properties=properties)
    if context is not None:
        record["context"] = context
    return record


def identify(user: str, when: str, email: str | None = None, anonymous: str | None = None) -> dict:
    return event("identify", when, user, anonymous, traits={"email": email} if email else {})


def group(user: str, group_id: str, when: str, **traits) -> dict:
    return event("group", when, user, groupId=group_id, traits=traits)


# acme.co.in: two users join by company domain. Count filters, rolling 7d bounds, trend and max.
ACME = [
    identify("a", "2024-03-01T00:00:00", "a@mail.acme.co.in"),
    identify("b", "2024-03-01T00:00:00", "b@ACME.co.in"),
    track("Report Run", "2024-03-13T15:00:00", "a", rows=50, format="csv"),  # at AS_OF: counts
    track("Report Run", "2024-03-13T15:00:00.000001", "a", rows=999, format="csv"),  # after AS_OF
    track("Report Run", "2024-03-06T15:00:00", "a", rows=20, format="pdf"),  # 7d bound: previous window
    track("Report Run", "2024-03-06T15:00:00.000001", "b", rows=11, format="pdf"),  # just inside
    track("Report Run", "2024-03-10T00:00:00", "a", rows=10, format="csv"),  # not > 10
    track("Report Run", "2024-03-11T00:00:00", "a", rows=30, format="xlsx"),  # format not in list
    track("Report Run", "2024-03-12T00:00:00", "a", rows="15", format="csv"),  # number as text
    track("Report Run", "2024-03-12T01:00:00", "a", rows="many", format="csv"),  # not a number
    track("Report Run", "2024-03-01T00:00:00", "b", rows=12, format="csv"),  # previous window
    track("Report Run", "2024-02-28T15:00:00", "b", rows=40, format="csv"),  # before the previous window
]

# ws-1: group calls, merged group traits, an identify that moves anonymous events; sum, last, ratio, 24h.
WS_1 = [
    group("c", "ws-1", "2024-03-01T00:00:00", name="Workspace One", plan="free", employees=25),
    group("c", "ws-1", "2024-03-05T00:00:00", plan="trial"),
    identify("c", "2024-03-03T00:00:00", "c@gmail.com", anonymous="anon-1"),
    identify("u10", "2024-03-01T00:00:00", "x@corp.com"),
    group("u10", "ws-1", "2024-03-01T00:00:00"),
    identify("u11", "2024-03-01T00:00:00", "y@other.com"),
    group("u11", "ws-1", "2024-03-01T00:00:00"),
    track("Seats Added", "2024-03-02T00:00:00", anonymous="anon-1", seats=4),
    track("Seats Added", "2024-03-10T12:00:00", "c", seats=2.5),
    track("Seats Added", "2024-03-12T00:00:00", "c", seats=0.25),
    track("Seats Added", "2024-02-14T15:00:00", "c", seats=100),  # 28d bound: outside
    track("Storage Measured", "2024-03-05T00:00:00", "c", gb=40),
    track("Storage Measured", "2024-03-12T12:00:00", "c", gb=45),
    track("Storage Measured", "2024-03-13T15:00:00.000001", "c", gb=99),  # after AS_OF
    track("Ping", "2024-03-12T15:00:00", "u10"),  # 24h bound: outside
    track("Ping", "2024-03-12T15:00:00.000001", "u11"),
    track("Ping", "2024-03-13T10:00:00", "c"),
]

# ws-2: joined by context.groupId; two emails at the same instant; equals and not_equals filters.
WS_2 = [
    identify("d", "2024-03-02T00:00:00", "d@alpha.com"),
    identify("d", "2024-03-02T00:00:00", "d@zeta.com"),
    track("Export", "2024-03-11T00:00:00", "d", format="csv", paid=True, pages=3, context={"groupId": "ws-2"}),
    track("Export", "2024-03-11T01:00:00", "d", paid="true", pages=3, context={"groupId": "ws-2"}),
    track("Export", "2024-03-11T02:00:00", "d", format="pdf", paid=True, pages=3.0, context={"groupId": "ws-2"}),
    track("Export", "2024-03-11T03:00:00", "d", format="csv", paid=False, pages=3, context={"groupId": "ws-2"}),
    track("Export", "2024-03-11T04:00:00", "d", format="csv", paid=True, pages="3", context={"groupId": "ws-2"}),
]

# ws-week: calendar weeks in New York across the switch to daylight saving time.
WS_WEEK = [
    group("w", "ws-week", "2024-02-20T00:00:00"),
    track("Project Opened", "2024-03-03T04:59:59.999999", "w", project_id="p0"),  # before the previous week
    track("Project Opened", "2024-03-03T05:00:00", "w", project_id="p0"),  # previous week's first instant
    track("Project Opened", "2024-03-10T04:59:59.999999", "w", project_id="p1"),  # previous week's last
    track("Project Opened", "2024-03-10T05:00:00", "w", project_id="p2"),  # this week's first instant
    track("Project Opened", "2024-03-10T12:00:00", "w", project_id="p2"),
    track("Project Opened", "2024-03-12T00:00:00", "w", project_id=7),
    track("Project Opened", "2024-03-13T15:00:00.000001", "w", project_id="p9"),  # after AS_OF
    track("Project Opened", "2024-03-17T03:59:59.999999", "w", project_id="q2"),  # AS_OF_DST's previous week
    track("Project Opened", "2024-03-17T04:00:00", "w", project_id="q1"),  # AS_OF_DST's week (EDT)
]

# beta.io: an alias renames a userId and an identify links an anonymousId; the earliest link wins.
BETA = [
    track("Report Run", "2024-03-08T00:00:00", "old-e", rows=20, format="csv"),
    event("alias", "2024-03-09T00:00:00", "e", previousId="old-e"),
    identify("e", "2024-03-04T00:00:00", "e@beta.io", anonymous="anon-2"),
    track("Report Run", "2024-03-07T00:00:00", anonymous="anon-2", rows=12, format="csv"),
    identify("f", "2024-03-09T00:00:00", "f@gmail.com", anonymous="anon-2"),
]

# Personal accounts: free mail, an anonymousId linked to two users at once, and one never linked.
PERSONAL = [
    identify("h", "2024-03-01T00:00:00", "h@gmail.com"),
    track("Ping", "2024-03-13T12:00:00", "h"),
    identify("g2", "2024-03-05T00:00:00", anonymous="anon-3"),
    identify("g1", "2024-03-05T00:00:00", anonymous="anon-3"),
    track("Ping", "2024-03-11T00:00:00", anonymous="anon-3"),
    track("Ping", "2024-03-12T00:00:00", anonymous="anon-9"),
]

EVENTS = [*ACME, *WS_1, *WS_2, *WS_WEEK, *BETA, *PERSONAL]


@dataclass
class EngineRun:
    """What one engine produced: scores by as-of time and account, and the identity tables."""

    scores: dict[datetime, dict[str, dict]]
    users: dict[str, dict]
    accounts: dict[str, dict]
    user_keys: dict[str, dict]


def _keyed(store: Store, sql: str, key: str) -> dict[str, dict]:
    return {row[key]: row for row in store.rows(sql)}


def _identity(store: Store) -> dict[str, dict[str, dict]]:
    return {
        "users": _keyed(store, "SELECT * FROM users", "user_id"),
        "accounts": _keyed(store, "SELECT * FROM accounts", "account_id"),
        "user_keys": _keyed(store, "SELECT * FROM user_keys", "user_key"),
    }


def _scores(store: Store, engine, model) -> dict[datetime, dict[str, dict]]:
    scores = {}
    for as_of in (AS_OF, AS_OF_DST):
        with engine.scores(model, as_of) as relation:
            scores[as_of] = _keyed(store, f"SELECT * FROM {relation}", "account_id")
    return scores


@pytest.fixture(scope="module")
def runs(spark, tmp_path_factory) -> dict[str, EngineRun]:  # noqa: F811
    model = parse_model(MODEL_YAML)
    lake = tmp_path_factory.mktemp("lake")
    with Store(":memory:") as store:
        add_events(store, *EVENTS)
        export_events(store, lake)
        resolve_accounts(store)
        duckdb_run = EngineRun(_scores(store, DuckDBEngine(), model), **_identity(store))
    with Store(":memory:") as results:
        engine = SparkEngine(spark, str(lake), results)
        engine.resolve_accounts()
        spark_run = EngineRun(_scores(results, engine, model), **_identity(results))
        engine.release()
    return {"duckdb": duckdb_run, "spark": spark_run}


@pytest.fixture(params=ENGINES)
def run(request, runs) -> EngineRun:
    return runs[request.param]


def signal(run: EngineRun, account: str, name: str, as_of: datetime = AS_OF):
    return run.scores[as_of][account][name]


# -- signal types -------------------------------------------------------------------


def test_count_with_property_filters(run):
    assert signal(run, "acme.co.in", "big_reports") == 3


def test_count_in_previous_rolling_window(run):
    assert signal(run, "acme.co.in", "big_reports__previous") == 2


def test_trend_against_previous_window(run):
    assert signal(run, "acme.co.in", "report_trend") == 1.5


def test_trend_without_previous_events_is_null(run):
    assert signal(run, "ws-1", "report_trend") is None


def test_not_equals_counts_missing_property(run):
    assert signal(run, "ws-2", "non_pdf_exports") == 4


def test_equals_matches_text_and_numbers(run):
    assert signal(run, "ws-2", "paid_exports") == 4


def test_distinct_users_in_hours_window(run):
    assert signal(run, "ws-1", "daily_users") == 2


def test_sum_of_fractions(run):
    assert signal(run, "ws-1", "seats") == 6.75


def test_sum_of_nothing_is_null(run):
    assert signal(run, "acme.co.in", "seats") is None


def test_max_ignores_later_and_text_values(run):
    assert signal(run, "acme.co.in", "max_rows") == 50


def test_last_value_before_as_of(run):
    assert signal(run, "ws-1", "last_storage") == 45


def test_distinct_property_in_calendar_week(run):
    assert signal(run, "ws-week", "projects_opened") == 2


def test_ratio_of_two_signals(run):
    assert signal(run, "ws-1", "seats_per_user") == 3.375


def test_ratio_to_constant_in_percent(run):
    assert signal(run, "ws-1", "storage_used") == 90.0


def test_ratio_with_null_numerator_is_null(run):
    assert signal(run, "acme.co.in", "storage_used") is None


# -- calendar weeks -------------------------------------------------------------------


def test_week_starts_sunday_midnight_new_york(run):
    assert signal(run, "ws-week", "weekly_actions") == 3
    assert signal(run, "ws-week", "weekly_actions__previous") == 1


def test_week_after_daylight_saving_switch(run):
    assert signal(run, "ws-week", "weekly_actions", AS_OF_DST) == 1
    assert signal(run, "ws-week", "weekly_actions__previous", AS_OF_DST) == 1
    assert signal(run, "ws-week", "projects_opened", AS_OF_DST) == 1


# -- points and scores ------------------------------------------------------------------


def test_points_per_rule(run):
    ws_1 = run.scores[AS_OF]["ws-1"]
    assert ws_1["points__weekly_actions"] == 10
    assert ws_1["points__storage_used"] == 15
    assert ws_1["points__seats"] == 0
    assert ws_1["points__free_plan"] == 5
    assert ws_1["points__company_size"] == 10


def test_scores_of_every_account(run):
    scores = {account: row["score"] for account, row in run.scores[AS_OF].items()}
    assert scores == {
        "acme.co.in": 10, "ws-1": 40, "ws-2": 10, "ws-week": 0, "beta.io": 10,
        "user:f": 0, "user:h": 0, "user:g1": 0, "user:g2": 0,
    }


# -- account resolution ---------------------------------------------------------------


def test_group_call_sets_account(run):
    assert run.users["c"]["account_id"] == "ws-1"
    assert run.users["c"]["joined_by"] == "group"
    assert run.accounts["ws-1"]["users"] == 3


def test_later_group_call_updates_one_trait(run):
    account = run.accounts["ws-1"]
    assert json.loads(account["traits"]) == {"employees": 25, "name": "Workspace One", "plan": "trial"}
    assert account["name"] == "Workspace One"


def test_context_group_id_sets_account(run):
    assert run.users["d"]["account_id"] == "ws-2"


def test_company_domain_joins_subdomain_and_case(run):
    assert run.users["a"]["account_id"] == "acme.co.in"
    assert run.users["b"]["account_id"] == "acme.co.in"
    assert run.accounts["acme.co.in"]["kind"] == "domain"
    assert run.accounts["acme.co.in"]["users"] == 2


def test_free_mail_gets_personal_account(run):
    assert run.users["h"]["account_id"] == "user:h"
    assert run.users["h"]["joined_by"] == "personal"
    assert "gmail.com" not in run.accounts


def test_identify_moves_anonymous_events(run):
    assert run.user_keys["anon:anon-1"]["user_id"] == "c"
    assert run.user_keys["anon:anon-1"]["account_id"] == "ws-1"


def test_alias_moves_former_user_id(run):
    assert "old-e" not in run.users
    assert run.user_keys["old-e"]["user_id"] == "e"
    assert signal(run, "beta.io", "big_reports") == 2


def test_earliest_anonymous_link_wins(run):
    assert run.user_keys["anon:anon-2"]["user_id"] == "e"


def test_unlinked_anonymous_events_have_no_account(run):
    assert "anon:anon-9" not in run.user_keys


def test_simultaneous_links_pick_smallest_user_id(run):
    assert run.user_keys["anon:anon-3"]["user_id"] == "g1"
    assert signal(run, "user:g1", "weekly_actions") == 1


def test_simultaneous_emails_pick_largest(run):
    assert run.users["d"]["email"] == "d@zeta.com"


def test_member_domain_tie_picks_first_alphabetically(run):
    assert run.accounts["ws-1"]["domain"] == "corp.com"


# -- the two engines side by side ---------------------------------------------------------


@pytest.mark.parametrize("table", ["users", "accounts", "user_keys"])
def test_engines_agree_on_identity(runs, table):
    duckdb_rows, spark_rows = getattr(runs["duckdb"], table), getattr(runs["spark"], table)
    assert sorted(spark_rows) == sorted(duckdb_rows)
    for key, row in duckdb_rows.items():
        assert spark_rows[key] == row, f"{table} row {key!r} differs"


@pytest.mark.parametrize("as_of", [AS_OF, AS_OF_DST], ids=["as_of", "as_of_dst"])
def test_engines_agree_on_every_value(runs, as_of):
    duckdb_scores, spark_scores = runs["duckdb"].scores[as_of], runs["spark"].scores[as_of]
    assert sorted(spark_scores) == sorted(duckdb_scores)
    for account, row in duckdb_scores.items():
        assert list(spark_scores[account]) == list(row), "columns differ"
        for column, value in row.items():
            assert spark_scores[account][column] == value, f"{account} {column}"
