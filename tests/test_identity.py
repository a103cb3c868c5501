"""Identity: which account each user joins, aliases and identifies, and account traits."""

from __future__ import annotations

import json
from datetime import datetime

import orjson
import pytest

from tests.conftest import add_events
from upsignal.cli import run_app
from upsignal.identity import resolve_accounts
from upsignal.scoring import score_accounts
from upsignal.signals.model import parse_model
from upsignal.store import Store

COUNT_MODEL = """
name: count-everything
signals:
  actions:
    type: count
    window: 28d
tiers:
  - {name: cold, min: 0}
  - {name: pql, min: 50}
"""
AS_OF = datetime(2024, 3, 20)  # the 28-day window covers every event below


def track(user_id=None, event="Report Run", day=1, anonymous_id=None, **extra):
    record = {"type": "track", "event": event, "timestamp": f"2024-03-{day:02d}T10:00:00Z", **extra}
    if user_id is not None:
        record["userId"] = user_id
    if anonymous_id is not None:
        record["anonymousId"] = anonymous_id
    return record


def identify(user_id, email=None, day=1, anonymous_id=None, **traits):
    if email is not None:
        traits["email"] = email
    record = {"type": "identify", "userId": user_id, "traits": traits, "timestamp": f"2024-03-{day:02d}T09:00:00Z"}
    if anonymous_id is not None:
        record["anonymousId"] = anonymous_id
    return record


def group(user_id, group_id, day=1, **traits):
    return {"type": "group", "userId": user_id, "groupId": group_id, "traits": traits,
            "timestamp": f"2024-03-{day:02d}T09:30:00Z"}


def account_of(store: Store, user_id: str) -> str | None:
    return store.scalar("SELECT account_id FROM users WHERE user_id = ?", [user_id])


def user_row(store: Store, user_id: str) -> dict:
    return store.rows("SELECT * FROM users WHERE user_id = ?", [user_id])[0]


def account_row(store: Store, account_id: str) -> dict:
    rows = store.rows("SELECT * FROM accounts WHERE account_id = ?", [account_id])
    assert rows, f"no account {account_id!r}"
    return rows[0]


def account_signals(store: Store) -> dict[str, float]:
    model = parse_model(COUNT_MODEL)
    run = score_accounts(store, model, COUNT_MODEL, AS_OF)
    rows = store.rows("SELECT account_id, signals FROM account_scores WHERE run_id = ?", [run.run_id])
    return {row["account_id"]: orjson.loads(row["signals"])["actions"] for row in rows}


# -- precedence -------------------------------------------------------------------


def test_group_call_sets_account(store):
    add_events(store, identify("u1", "ann@acme.com"), group("u1", "ws-42"))
    resolve_accounts(store)
    assert account_of(store, "u1") == "ws-42"
    assert user_row(store, "u1")["joined_by"] == "group"


def test_context_group_id_sets_account(store):
    add_events(store, identify("u1", "ann@acme.com"), track("u1", context={"groupId": "ws-7"}))
    resolve_accounts(store)
    assert account_of(store, "u1") == "ws-7"


def test_group_beats_company_domain(store):
    add_events(
        store,
        identify("u1", "ann@acme.com"),
        identify("u2", "bob@acme.com"),
        group("u2", "ws-9"),
    )
    resolve_accounts(store)
    assert account_of(store, "u1") == "acme.com"
    assert account_of(store, "u2") == "ws-9"


def test_latest_group_call_wins(store):
    add_events(store, group("u1", "ws-old", day=1), group("u1", "ws-new", day=5), group("u1", "ws-mid", day=3))
    resolve_accounts(store)
    assert account_of(store, "u1") == "ws-new"


def test_numeric_context_group_id_is_text(store):
    add_events(store, track("u1", context={"groupId": 1234}))
    resolve_accounts(store)
    assert account_of(store, "u1") == "1234"


# -- email domains ----------------------------------------------------------------


def test_subdomain_and_case_share_account(store):
    add_events(store, identify("a", "a@mail.acme.co.in"), identify("b", "b@ACME.co.in"))
    resolve_accounts(store)
    assert account_of(store, "a") == "acme.co.in"
    assert account_of(store, "b") == "acme.co.in"
    assert account_row(store, "acme.co.in")["users"] == 2
    assert account_row(store, "acme.co.in")["kind"] == "domain"


def test_free_mail_gets_personal_accounts(store):
    add_events(store, identify("g1", "one@gmail.com"), identify("g2", "two@gmail.com"))
    resolve_accounts(store)
    assert account_of(store, "g1") == "user:g1"
    assert account_of(store, "g2") == "user:g2"
    assert store.scalar("SELECT count(*) FROM accounts WHERE account_id = 'gmail.com'") == 0


def test_disposable_mail_gets_personal_account(store):
    add_events(store, identify("d1", "x@mailinator.com"), identify("d2", "y@mailinator.com"))
    resolve_accounts(store)
    assert account_of(store, "d1") == "user:d1"
    assert account_of(store, "d2") == "user:d2"
    assert user_row(store, "d1")["joined_by"] == "personal"


def test_user_without_email_gets_personal_account(store):
    add_events(store, track("solo"))
    resolve_accounts(store)
    assert account_of(store, "solo") == "user:solo"


def test_email_stored_lowercase(store):
    add_events(store, identify("u1", "  Ann.Lee@Example.COM "))
    resolve_accounts(store)
    assert user_row(store, "u1")["email"] == "ann.lee@example.com"
    assert account_of(store, "u1") == "example.com"


def test_mixed_case_domains_share_account(store):
    add_events(store, identify("u1", "ann@Example.com"), identify("u2", "bob@EXAMPLE.COM"))
    resolve_accounts(store)
    assert account_of(store, "u1") == account_of(store, "u2") == "example.com"


def test_email_from_context_traits(store):
    add_events(store, track("u1", context={"traits": {"email": "cy@initech.io"}}))
    resolve_accounts(store)
    assert account_of(store, "u1") == "initech.io"


def test_latest_email_wins(store):
    add_events(store, identify("u1", "ann@old.com", day=1), identify("u1", "ann@new.com", day=9))
    resolve_accounts(store)
    assert account_of(store, "u1") == "new.com"


# -- aliases and identifies ---------------------------------------------------------


def test_identify_links_anonymous_events(store):
    add_events(
        store,
        track(anonymous_id="anon-1", event="Report Run", day=2),
        track(anonymous_id="anon-1", event="Report Run", day=3),
        identify("u1", "ann@acme.com", day=4, anonymous_id="anon-1"),
        track("u1", day=5),
    )
    resolve_accounts(store)
    assert store.scalar("SELECT user_id FROM user_keys WHERE user_key = 'anon:anon-1'") == "u1"
    assert account_signals(store)["acme.com"] == 3


def test_alias_moves_anonymous_events(store):
    add_events(
        store,
        track(anonymous_id="visitor-9", day=2),
        {"type": "alias", "previousId": "visitor-9", "userId": "u2", "timestamp": "2024-03-03T00:00:00Z"},
        identify("u2", "bo@globex.com", day=3),
    )
    resolve_accounts(store)
    assert store.scalar("SELECT account_id FROM user_keys WHERE user_key = 'anon:visitor-9'") == "globex.com"
    assert account_signals(store)["globex.com"] == 1


def test_alias_renames_former_user_id(store):
    add_events(
        store,
        track("temp-7", day=2),
        {"type": "alias", "previousId": "temp-7", "userId": "u3", "timestamp": "2024-03-03T00:00:00Z"},
        identify("u3", "cy@initech.io", day=3),
    )
    resolve_accounts(store)
    assert store.scalar("SELECT count(*) FROM users WHERE user_id = 'temp-7'") == 0
    assert account_signals(store)["initech.io"] == 1


def test_unlinked_anonymous_user_has_no_account(store):
    add_events(store, track(anonymous_id="ghost"), track("u1"))
    resolve_accounts(store)
    assert store.scalar("SELECT count(*) FROM user_keys WHERE user_key = 'anon:ghost'") == 0
    assert account_signals(store) == {"user:u1": 1}


def test_anonymous_signals_follow_user_group(store):
    add_events(
        store,
        track(anonymous_id="a-5", day=2),
        identify("u5", day=3, anonymous_id="a-5"),
        group("u5", "ws-5", day=3),
    )
    resolve_accounts(store)
    assert account_signals(store) == {"ws-5": 1}


# -- account traits -------------------------------------------------------------------


def test_group_traits_stored_on_account(store):
    add_events(store, group("u1", "ws-1", name="Acme Corp", plan="free", seats=12, industry="Retail"))
    resolve_accounts(store)
    row = account_row(store, "ws-1")
    traits = json.loads(row["traits"])
    assert row["name"] == "Acme Corp"
    assert traits["plan"] == "free"
    assert traits["seats"] == 12
    assert traits["industry"] == "Retail"


def test_later_group_call_updates_one_trait(store):
    add_events(
        store,
        group("u1", "ws-1", day=1, name="Acme Corp", plan="free", seats=3),
        group("u1", "ws-1", day=6, plan="team"),
    )
    resolve_accounts(store)
    row = account_row(store, "ws-1")
    traits = json.loads(row["traits"])
    assert traits["plan"] == "team"
    assert traits["seats"] == 3
    assert row["name"] == "Acme Corp"


def test_group_traits_from_anonymous_call(store):
    add_events(
        store,
        {"type": "group", "anonymousId": "import-job", "groupId": "ws-2", "traits": {"name": "Globex"},
         "timestamp": "2024-03-01T00:00:00Z"},
        group("u1", "ws-2"),
    )
    resolve_accounts(store)
    assert account_row(store, "ws-2")["name"] == "Globex"
    assert store.scalar("SELECT count(*) FROM users") == 1


def test_group_website_sets_account_domain(store):
    add_events(store, group("u1", "ws-3", website="https://www.initech.co.uk/about"))
    resolve_accounts(store)
    assert account_row(store, "ws-3")["domain"] == "initech.co.uk"


def test_domain_account_named_by_domain(store):
    add_events(store, identify("u1", "ann@acme.com", name="Ann Lee"))
    resolve_accounts(store)
    assert account_row(store, "acme.com")["name"] == "acme.com"


def test_personal_account_named_by_user(store):
    add_events(store, identify("u1", "ann@gmail.com", name="Ann Lee"))
    resolve_accounts(store)
    assert account_row(store, "user:u1")["name"] == "Ann Lee"


def test_resolve_is_repeatable(store):
    add_events(store, identify("a", "a@acme.com"), identify("b", "b@gmail.com"))
    first = resolve_accounts(store)
    second = resolve_accounts(store)
    assert first == second == {"users": 2, "accounts": 2}


# -- the users command ------------------------------------------------------------------


@pytest.fixture
def store_file(tmp_path):
    path = tmp_path / "identity.duckdb"
    with Store(path) as fresh:
        add_events(
            fresh,
            identify("a", "a@mail.acme.co.in"),
            identify("b", "b@ACME.co.in"),
            identify("g", "g@gmail.com"),
            group("w", "ws-1", name="Workspace One"),
        )
        resolve_accounts(fresh)
    return path


def test_users_json_fields(store_file, capsys):
    assert run_app(["users", "--db", str(store_file), "--json"]) == 0
    users = {user["user_id"]: user for user in json.loads(capsys.readouterr().out)}
    assert set(users) == {"a", "b", "g", "w"}
    for user in users.values():
        assert {"user_id", "email", "account_id"} <= set(user)
    assert users["a"]["email"] == "a@mail.acme.co.in"
    assert users["b"]["account_id"] == "acme.co.in"
    assert users["g"]["account_id"] == "user:g"
    assert users["w"]["account_id"] == "ws-1"
    assert users["w"]["email"] is None


def test_users_filtered_by_account(store_file, capsys):
    assert run_app(["users", "--db", str(store_file), "--account", "acme.co.in", "--json"]) == 0
    users = json.loads(capsys.readouterr().out)
    assert sorted(user["user_id"] for user in users) == ["a", "b"]


def test_alias_chain_ends_at_latest_user(store):
    add_events(
        store,
        {"type": "page", "anonymousId": "anon-x", "timestamp": "2024-01-01T00:00:00Z"},
        {"type": "identify", "anonymousId": "anon-x", "userId": "a", "traits": {"email": "a@globex.com"},
         "timestamp": "2024-01-01T00:01:00Z"},
        {"type": "alias", "previousId": "a", "userId": "b", "timestamp": "2024-01-02T00:00:00Z"},
        {"type": "track", "userId": "b", "event": "Report Run", "timestamp": "2024-01-02T00:01:00Z"},
        {"type": "alias", "previousId": "b", "userId": "c", "timestamp": "2024-01-03T00:00:00Z"},
        {"type": "group", "userId": "c", "groupId": "org-1", "timestamp": "2024-01-03T00:01:00Z"},
    )

    resolve_accounts(store)

    users = store.rows("SELECT user_id, account_id FROM users")
    keys = {row["user_key"]: row["user_id"] for row in store.rows("SELECT user_key, user_id FROM user_keys")}
    assert users == [{"user_id": "c", "account_id": "org-1"}]
    assert keys["anon:anon-x"] == "c"
    assert keys["a"] == keys["b"] == "c"
