"""Transitions with hysteresis and cooldown, and the outbox rows written with them."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.vendors.accounts import START, add_account, score, set_score
from upsignal.errors import ConfigError

HOOK = {"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/hooks"}
ENTER_AND_LEAVE = {"destinations": [{**HOOK, "events": ["entered", "left"]}]}


def transitions(store):
    return store.rows(
        "SELECT account_id, from_tier, to_tier, score, entry_suppressed, exit_suppressed FROM transitions"
        " ORDER BY transition_id"
    )


def outbox(store):
    return store.rows(
        "SELECT o.destination, o.event, t.account_id, t.from_tier, t.to_tier, o.status"
        " FROM alert_outbox AS o JOIN transitions AS t USING (transition_id) ORDER BY o.alert_id"
    )


def test_wobbling_score_enters_pql_once(store):
    add_account(store, "acme")
    for hour, level in enumerate([60, 85, 95, 78, 88], start=1):
        at = START + timedelta(hours=hour)
        set_score(store, "acme", level, at)
        score(store, at, {"destinations": [HOOK]})

    assert [(row["from_tier"], row["to_tier"]) for row in transitions(store)] == [(None, "hot"), ("hot", "pql")]
    assert [(row["event"], row["to_tier"]) for row in outbox(store)] == [("entered", "pql")]


def test_first_score_above_lowest_tier_is_an_entry(store):
    add_account(store, "acme")
    set_score(store, "acme", 90, START + timedelta(hours=1))

    score(store, START + timedelta(hours=1), {"destinations": [HOOK]})

    assert [(row["from_tier"], row["to_tier"]) for row in transitions(store)] == [(None, "pql")]
    assert len(outbox(store)) == 1


def test_reentry_within_cooldown_raises_no_alert(store):
    add_account(store, "acme")
    # Enter pql, leave it, re-enter 2 days after leaving, leave again. The last transition
    # also re-enters cold within the cooldown, so its entry half is suppressed too.
    steps = [(0, 90), (1, 40), (3, 90), (4, 40)]
    for day, level in steps:
        at = START + timedelta(days=day)
        set_score(store, "acme", level, at)
        score(store, at, ENTER_AND_LEAVE)

    rows = transitions(store)
    assert [(row["to_tier"], row["entry_suppressed"], row["exit_suppressed"]) for row in rows] == [
        ("pql", False, False), ("cold", False, False), ("pql", True, False), ("cold", True, True),
    ]
    assert [(row["event"], row["to_tier"]) for row in outbox(store)] == [("entered", "pql"), ("left", "cold")]


def test_reentry_after_cooldown_alerts_again(store):
    add_account(store, "acme")
    for day, level in [(0, 90), (1, 40), (9, 90)]:  # re-enter 8 days after leaving; the cooldown is 7d
        at = START + timedelta(days=day)
        set_score(store, "acme", level, at)
        score(store, at, {"destinations": [HOOK]})

    assert [row["event"] for row in outbox(store)] == ["entered", "entered"]


def test_cooldown_is_per_account(store):
    add_account(store, "acme")
    add_account(store, "globex")
    for day, acme, globex in [(0, 90, 40), (1, 40, 40), (2, 90, 90)]:
        at = START + timedelta(days=day)
        set_score(store, "acme", acme, at)
        set_score(store, "globex", globex, at)
        score(store, at, {"destinations": [HOOK]})

    assert [row["account_id"] for row in outbox(store)] == ["acme", "globex"]


def test_destination_tiers_and_events_filter_rows(store):
    add_account(store, "acme")
    alerts = {"destinations": [
        {**HOOK, "name": "pql-entries"},
        {**HOOK, "name": "hot-both", "tiers": ["hot"], "events": ["entered", "left"]},
        {**HOOK, "name": "off", "enabled": False},
    ]}
    for hour, level in [(1, 60), (2, 90)]:  # cold -> hot (enter hot), hot -> pql (leave hot, enter pql)
        at = START + timedelta(hours=hour)
        set_score(store, "acme", level, at)
        score(store, at, alerts)

    assert [(row["destination"], row["event"], row["from_tier"], row["to_tier"]) for row in outbox(store)] == [
        ("hot-both", "entered", None, "hot"),
        ("pql-entries", "entered", "hot", "pql"),
        ("hot-both", "left", "hot", "pql"),
    ]


def test_unknown_tier_rolls_back_the_whole_run(store):
    add_account(store, "acme")
    set_score(store, "acme", 90, START + timedelta(hours=1))

    with pytest.raises(ConfigError, match="tier 'platinum'"):
        score(store, START + timedelta(hours=1), {"destinations": [{**HOOK, "tiers": ["platinum"]}]})

    assert store.scalar("SELECT count(*) FROM score_runs") == 0
    assert store.scalar("SELECT count(*) FROM transitions") == 0
    assert store.scalar("SELECT count(*) FROM account_state") == 0


def test_project_file_alerts_are_the_default(store, tmp_path, monkeypatch):
    from upsignal.scoring import score_accounts
    from tests.vendors.accounts import MODEL, MODEL_YAML

    project = tmp_path / "upsignal.yaml"
    project.write_text("alerts:\n  destinations:\n    - {name: hook, type: webhook, url: 'http://127.0.0.1:9/x'}\n")
    monkeypatch.setenv("UPSIGNAL_PROJECT", str(project))
    add_account(store, "acme")
    set_score(store, "acme", 90, START + timedelta(hours=1))

    score_accounts(store, MODEL, MODEL_YAML, START + timedelta(hours=1))

    assert [row["destination"] for row in outbox(store)] == ["hook"]


def test_earlier_as_of_adds_no_transition(store):
    add_account(store, "acme")
    set_score(store, "acme", 90, START + timedelta(hours=1))
    score(store, START + timedelta(days=2), {"destinations": [HOOK]})

    score(store, START + timedelta(days=1), {"destinations": [HOOK]})

    assert len(transitions(store)) == 1
    assert len(outbox(store)) == 1
