"""Points, caps, tiers with hysteresis, snapshots and explanations."""

from __future__ import annotations

from datetime import datetime, timedelta

import orjson
import pytest

from tests.conftest import add_events
from upsignal.errors import ModelError, NotFoundError
from upsignal.identity import resolve_accounts
from upsignal.scoring import explain_account, score_accounts
from upsignal.signals.model import default_model_text, parse_model

MODEL = """
name: scoring-test
signals:
  reports: {type: count, event: Report Run, window: 7d, compare_previous: true,
            sentence: "ran {value} reports {window}"}
  teammates: {type: count, event: Invite Sent, window: 28d, sentence: "{value} teammates joined {window}"}
rules:
  - signal: reports
    steps: [{at: 1, points: 60}, {at: 2, points: 85}, {at: 3, points: 95}, {at: 4, points: 78}, {at: 5, points: 88}]
  - name: many_teammates
    signal: teammates
    steps: [{at: 5, points: 20}, {at: 10, points: 30}]
fit:
  - {name: free_plan, trait: plan, equals: free, points: 10}
  - {name: big_company, trait: employees, at_least: 100, points: 15}
max_score: 100
tiers:
  - {name: cold, min: 0}
  - {name: warm, min: 30}
  - {name: pql, min: 80, exit_below: 70}
cooldown: 1d
"""

START = datetime(2024, 5, 1, 9)


@pytest.fixture
def model():
    return parse_model(MODEL)


def _report(store, index: int, moment: datetime, user: str = "u1", group: str = "acme") -> None:
    add_events(store, {"type": "track", "userId": user, "event": "Report Run", "messageId": f"{user}-r{index}",
                       "timestamp": moment.isoformat() + "Z", "context": {"groupId": group}})


def _score(store, model, as_of):
    resolve_accounts(store)
    return score_accounts(store, model, MODEL, as_of)


def test_graded_steps_give_highest_step_reached(store, model):
    for index in range(12):
        add_events(store, {"type": "track", "userId": "u1", "event": "Invite Sent", "messageId": f"i{index}",
                           "timestamp": (START + timedelta(minutes=index)).isoformat() + "Z",
                           "context": {"groupId": "acme"}})
    run = _score(store, model, START + timedelta(hours=1))

    points = orjson.loads(store.scalar("SELECT points FROM account_scores WHERE run_id = ?", [run.run_id]))
    assert points["many_teammates"] == 30
    assert points["reports"] == 0


def test_score_is_capped_at_max_score(store, model):
    for index in range(5):
        _report(store, index, START + timedelta(minutes=index))
    for index in range(10):
        add_events(store, {"type": "track", "userId": "u1", "event": "Invite Sent", "messageId": f"i{index}",
                           "timestamp": (START + timedelta(minutes=index)).isoformat() + "Z"})
    _score(store, model, START + timedelta(hours=1))

    assert store.scalar("SELECT score FROM account_state WHERE account_id = 'acme'") == 100


def test_fit_rules_read_group_traits(store, model):
    add_events(store, {"type": "group", "userId": "u1", "groupId": "acme", "timestamp": "2024-04-01T00:00:00Z",
                       "traits": {"name": "Acme", "plan": "free", "employees": 250}})
    _score(store, model, START)

    assert store.scalar("SELECT score FROM account_state WHERE account_id = 'acme'") == 25
    assert store.scalar("SELECT tier FROM account_state WHERE account_id = 'acme'") == "cold"


def test_hysteresis_gives_one_pql_entry(store, model):
    # One more report each hour gives scores 60, 85, 95, 78, 88 against an 80/70 pql band.
    tiers = []
    for hour in range(5):
        _report(store, hour, START + timedelta(hours=hour))
        _score(store, model, START + timedelta(hours=hour, minutes=30))
        tiers.append(store.scalar("SELECT tier FROM account_state WHERE account_id = 'acme'"))

    entries = store.rows("SELECT from_tier, to_tier FROM transitions WHERE account_id = 'acme' ORDER BY transition_id")
    assert tiers == ["warm", "pql", "pql", "pql", "pql"]
    assert [row["to_tier"] for row in entries] == ["warm", "pql"]


def test_account_leaves_tier_below_exit_threshold(store, model):
    for index in range(2):
        _report(store, index, START)
    _score(store, model, START + timedelta(minutes=1))
    _score(store, model, START + timedelta(days=8))

    assert store.scalar("SELECT tier FROM account_state WHERE account_id = 'acme'") == "cold"
    last = store.rows("SELECT from_tier, to_tier FROM transitions ORDER BY transition_id DESC LIMIT 1")[0]
    assert (last["from_tier"], last["to_tier"]) == ("pql", "cold")


def test_scoring_earlier_as_of_keeps_current_state(store, model):
    for index in range(2):
        _report(store, index, START + timedelta(days=3))
    _score(store, model, START + timedelta(days=3, hours=1))
    transitions = store.scalar("SELECT count(*) FROM transitions")

    _score(store, model, START)

    assert store.scalar("SELECT tier FROM account_state WHERE account_id = 'acme'") == "pql"
    assert store.scalar("SELECT count(*) FROM transitions") == transitions
    assert store.scalar("SELECT count(*) FROM account_scores") == 2


def test_snapshot_records_model_version_and_as_of(store, model):
    _report(store, 0, START)
    run = _score(store, model, START + timedelta(hours=1))

    stored = store.rows("SELECT as_of, model_version, accounts FROM score_runs WHERE run_id = ?", [run.run_id])[0]
    assert stored["as_of"] == START + timedelta(hours=1)
    assert stored["model_version"] == model.version
    assert stored["accounts"] == 1
    assert store.scalar("SELECT yaml FROM models WHERE model_version = ?", [model.version]) == MODEL


def test_explain_lists_rule_value_threshold_and_sentence(store, model):
    for index in range(3):
        _report(store, index, START - timedelta(days=8))
    for index in range(3, 8):
        _report(store, index, START + timedelta(minutes=index))
    _score(store, model, START - timedelta(days=7))
    _score(store, model, START + timedelta(hours=1))

    explanation = explain_account(store, "acme")

    top = explanation.contributions[0]
    assert (top.rule, top.value, top.threshold, top.points) == ("reports", 5, 5, 88)
    assert explanation.reasons[0] == "ran 5 reports in the last 7 days, up from 3 the 7 days before"
    assert explanation.previous_score == 95
    assert explanation.tier == "pql"


def test_explain_unknown_account_raises(store):
    with pytest.raises(NotFoundError, match="'nobody' has no score"):
        explain_account(store, "nobody")


def test_default_model_parses_and_has_pql_tier():
    model = parse_model(default_model_text())

    assert model.pql_tier in [tier.name for tier in model.tiers]
    assert {"Invite Sent", "Signed Up"} <= {name for s in model.signals.values() for name in getattr(s, "events", [])}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("reports: {type: count", "reports: {type: counted"), "signals.reports"),
        (("window: 28d", "window: 28x"), "window '28x' must be"),
        (("- signal: reports", "- signal: nothing"), "unknown signal 'nothing'"),
        (("{name: warm, min: 30}", "{name: warm, min: 90}"), "lowest to highest"),
        (("exit_below: 70", "exit_below: 85"), "exit_below (85.0) is above min"),
        (("equals: free, points", "equals: free, at_least: 3, points"), "exactly one of"),
    ],
)
def test_invalid_model_names_the_problem(change, message):
    with pytest.raises(ModelError) as raised:
        parse_model(MODEL.replace(*change))

    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('"ran {value} reports {window}"', '"ran {value} reports {windw}"'), "uses {windw}; the placeholders are"),
        (('"ran {value} reports {window}"', '"ran {value:.1f} reports"'), "values are already formatted"),
        (("{name: warm, min: 30}", "{name: cold, min: 30}"), "tiers: names must be unique"),
        (("max_score: 100", "max_score: 0"), "max_score"),
        (("max_score: 100", "max_score: 50"), "pql can never be reached"),
        (("cooldown: 1d", "cooldown: soon"), "cooldown: window 'soon'"),
        (("- signal: reports", "- signal: nothing"), "rules.0 (nothing): refers to unknown signal"),
    ],
)
def test_model_problems_found_at_load(change, message):
    with pytest.raises(ModelError) as raised:
        parse_model(MODEL.replace(*change))

    assert message in str(raised.value)


def test_constant_ratio_denominator_must_not_be_zero():
    text = MODEL.replace("rules:", "  share: {type: ratio, numerator: reports, denominator: 0}\nrules:", 1)

    with pytest.raises(ModelError, match="signals.share.denominator: a constant denominator must not be 0"):
        parse_model(text)


def test_sentence_can_place_previous_value(store):
    text = MODEL.replace('"ran {value} reports {window}"', '"ran {value} reports, {previous} before"')
    _report(store, 0, START - timedelta(days=8))
    _report(store, 1, START)
    resolve_accounts(store)
    score_accounts(store, parse_model(text), text, START + timedelta(hours=1))

    assert explain_account(store, "acme").reasons[0] == "ran 1 reports, 1 before"


def test_rescoring_earlier_time_keeps_hysteresis(store, model):
    # Scores 85 then 78 give pql, pql. Re-scoring the 78 moment after a later run must give pql again.
    for index in range(2):
        _report(store, index, START)
    _score(store, model, START + timedelta(minutes=1))
    for index in range(2, 4):
        _report(store, index, START + timedelta(hours=2))
    first = _score(store, model, START + timedelta(hours=3))
    _score(store, model, START + timedelta(days=1))

    again = _score(store, model, START + timedelta(hours=3))

    tiers = store.rows("SELECT run_id, tier FROM account_scores WHERE run_id IN (?, ?) ORDER BY run_id",
                       [first.run_id, again.run_id])
    assert [row["tier"] for row in tiers] == ["pql", "pql"]
