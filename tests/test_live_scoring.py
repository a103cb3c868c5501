"""Live scoring: incremental resolution and subset scoring match a full rebuild and a full score."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta

import pytest

from upsignal.events.writer import EventWriter
from upsignal.identity import resolve_accounts
from upsignal.scoring import score_accounts
from upsignal.server.ingest import prepare_events
from upsignal.server.live import LiveScorer
from upsignal.server.testing import batch_entry
from upsignal.server.writer import GroupCommitWriter
from upsignal.signals.model import default_model_text, parse_model
from upsignal.store import Store

AS_OF = datetime(2024, 3, 29)
RECEIVED_AT = datetime(2024, 3, 29)
MODEL_TEXT = default_model_text()
MODEL = parse_model(MODEL_TEXT)

USERS = [f"u{i}" for i in range(30)]
ANONYMOUS = [f"a{i}" for i in range(20)]
GROUPS = ["g-acme", "g-beta", "g-gamma"]
EMAILS = ["ann@acme.com", "bo@beta.io", "cy@gmail.com", "di@acme.com", "ed@gamma.co.uk", None]
EVENTS = ["Report Run", "Query Run", "Invite Sent", "Signed Up", "Project Created", "Project Shared"]


def random_message(rng: random.Random, number: int) -> dict:
    """One message of a random type over small id sets, so links, aliases and moves collide often."""
    kind = rng.choices(["track", "identify", "group", "alias", "page"], weights=[10, 3, 2, 1, 2])[0]
    day = rng.randint(1, 28)
    message = {"type": kind, "messageId": f"m{number}", "timestamp": f"2024-03-{day:02d}T{rng.randint(0, 23):02d}:00:00Z"}
    if kind == "alias":
        message["previousId"] = rng.choice(ANONYMOUS + USERS)
        message["userId"] = rng.choice(USERS)
        return message
    if rng.random() < 0.75:
        message["userId"] = rng.choice(USERS)
    if rng.random() < 0.5 or "userId" not in message:
        message["anonymousId"] = rng.choice(ANONYMOUS)
    if kind == "track":
        message["event"] = rng.choice(EVENTS)
        message["properties"] = {"project_id": f"p{rng.randint(1, 6)}"}
    elif kind == "identify":
        email = rng.choice(EMAILS)
        message["traits"] = {"email": email, "name": f"Name {rng.randint(1, 9)}"} if email else {"plan": "free"}
    elif kind == "group":
        message["groupId"] = rng.choice(GROUPS)
        message["traits"] = rng.choice([{"name": "Acme", "plan": "free"}, {"employees": rng.randint(5, 50)}, {}])
    return message


def state_rows(store: Store) -> dict[str, list[tuple]]:
    return {
        "users": store.conn.execute("SELECT * FROM users ORDER BY ALL").fetchall(),
        "accounts": store.conn.execute("SELECT * FROM accounts ORDER BY ALL").fetchall(),
        "user_keys": store.conn.execute("SELECT * FROM user_keys ORDER BY ALL").fetchall(),
        "account_state": store.conn.execute(
            "SELECT account_id, score, tier, tier_since FROM account_state ORDER BY ALL").fetchall(),
        "transitions": store.conn.execute(
            "SELECT account_id, from_tier, to_tier, score FROM transitions ORDER BY ALL").fetchall(),
    }


@pytest.fixture
def live_store():
    with Store(":memory:") as store:
        writer = GroupCommitWriter(store)
        writer.start()
        yield store, writer
        writer.stop()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_live_passes_match_full_rebuild(live_store, seed):
    """Few messages per pass over many ids, so most identities stay untouched between passes."""
    store, writer = live_store
    scorer = LiveScorer(store, MODEL, MODEL_TEXT)
    scorer.prepare()
    rng = random.Random(seed)
    with Store(":memory:") as reference:
        for round_number in range(15):
            messages = [random_message(rng, round_number * 100 + i) for i in range(12)]
            prepared = prepare_events(messages, RECEIVED_AT, timedelta(hours=1), "test")
            assert prepared.rejections == []
            asyncio.run(writer.write(batch_entry(messages, RECEIVED_AT)))
            EventWriter(reference).write_table(prepared.table)

            scorer.run_pass(AS_OF)
            resolve_accounts(reference)
            score_accounts(reference, MODEL, MODEL_TEXT, AS_OF)

            live, full = state_rows(store), state_rows(reference)
            for table in live:
                assert live[table] == full[table], f"{table} differs after round {round_number}"
        assert store.scalar("SELECT count(*) FROM live_touched") == 0
        assert store.scalar("SELECT count(*) FROM live_pending_accounts") == 0


def test_live_pass_scores_only_touched_accounts(live_store):
    store, writer = live_store
    first = [
        {"type": "identify", "userId": "ann", "messageId": "1", "traits": {"email": "ann@acme.com"},
         "timestamp": "2024-03-20T10:00:00Z"},
        {"type": "identify", "userId": "bo", "messageId": "2", "traits": {"email": "bo@beta.io"},
         "timestamp": "2024-03-20T10:00:00Z"},
    ]
    asyncio.run(writer.write(batch_entry(first, RECEIVED_AT)))
    scorer = LiveScorer(store, MODEL, MODEL_TEXT)
    scorer.prepare()
    assert scorer.run_pass(AS_OF).accounts == 2
    before = store.rows("SELECT * FROM account_state WHERE account_id = 'beta.io'")

    report = [{"type": "track", "userId": "ann", "messageId": f"r{i}", "event": "Report Run",
               "timestamp": "2024-03-25T10:00:00Z"} for i in range(12)]
    asyncio.run(writer.write(batch_entry(report, RECEIVED_AT)))
    later = scorer.run_pass(AS_OF + timedelta(hours=1))

    assert later.accounts == 1
    assert store.scalar("SELECT account_id FROM account_scores WHERE run_id = ?", [later.run_id]) == "acme.com"
    assert store.rows("SELECT * FROM account_state WHERE account_id = 'beta.io'") == before
    assert store.scalar("SELECT score FROM account_state WHERE account_id = 'acme.com'") == 10.0


def test_live_pass_without_events_scores_nothing(live_store):
    store, _ = live_store
    scorer = LiveScorer(store, MODEL, MODEL_TEXT)
    scorer.prepare()
    assert scorer.run_pass(AS_OF).accounts == 0
    assert store.scalar("SELECT count(*) FROM score_runs") == 0


def test_subset_query_keeps_full_query_values(live_store):
    store, writer = live_store
    rng = random.Random(7)
    messages = [random_message(rng, i) for i in range(120)]
    asyncio.run(writer.write(batch_entry(messages, RECEIVED_AT)))
    resolve_accounts(store)
    store.conn.execute("CREATE TEMP TABLE some_accounts AS SELECT account_id FROM accounts ORDER BY account_id LIMIT 3")
    subset = score_accounts(store, MODEL, MODEL_TEXT, AS_OF, only_accounts="some_accounts")
    full = score_accounts(store, MODEL, MODEL_TEXT, AS_OF)
    query = "SELECT account_id, score, signals, points FROM account_scores WHERE run_id = ? ORDER BY account_id"
    subset_rows = store.conn.execute(query, [subset.run_id]).fetchall()
    full_rows = {row[0]: row for row in store.conn.execute(query, [full.run_id]).fetchall()}
    assert len(subset_rows) == 3
    for row in subset_rows:
        assert row == full_rows[row[0]]
