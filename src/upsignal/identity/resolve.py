"""Resolve users into accounts, in SQL so every engine runs the same statements.

A user joins, in order of precedence:
1. the group of their latest group call (``group`` message or ``context.groupId``);
2. else the registrable domain of their email, unless it is free mail or disposable;
3. else a personal account ``user:<userId>``.

An anonymousId joins the user that a message names it with (an identify or any
other message carrying both ids, or an alias's previousId), and the earliest
such link counts. An alias also moves a former userId to the new one. Anonymous ids
that never link to a user belong to no account.

The statements are written in DuckDB's dialect and transpiled by SQLGlot for
Spark. They read ``events`` and two SQL functions, ``upsignal_account_domain``
(see identity.domains) and ``upsignal_merge_traits`` (below); each returns the
full contents of one table, rebuilt from scratch on every run. Where two rows
tie on time, a second sort key (the value itself) picks one, so every engine
chooses the same row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Protocol

import duckdb
import orjson
import pyarrow as pa
import sqlglot

from upsignal.identity.domains import ACCOUNT_DOMAIN_SQL_FUNCTION, account_domain
from upsignal.store import Store

log = logging.getLogger(__name__)

MERGE_TRAITS_SQL_FUNCTION = "upsignal_merge_traits"

# User traits come from identify calls and context.traits; a group call's traits describe the account.
_EMAIL = "lower(trim(COALESCE(traits ->> '$.email', context ->> '$.traits.email')))"
_USER_NAME = "COALESCE(traits ->> '$.name', context ->> '$.traits.name')"

# user_key -> final user_id, before accounts are known. An alias renames a user
# id; a chain of aliases (a -> b, b -> c) is followed for up to 6 renames, so
# every former id and every anonymous id linked to one ends at the latest id.
ALIAS_HOPS = 6
USER_LINKS_SQL = """
WITH anonymous_links AS (
  SELECT anonymous_id AS key, user_id, timestamp FROM events
  WHERE user_id IS NOT NULL AND anonymous_id IS NOT NULL
  UNION ALL
  SELECT previous_id, user_id, timestamp FROM events
  WHERE type = 'alias' AND previous_id IS NOT NULL AND user_id IS NOT NULL
),
renamed AS (
  SELECT previous_id AS old_id,
         ARG_MIN(user_id, {'linked_at': timestamp, 'user_id': user_id}) AS user_id
  FROM events
  WHERE type = 'alias' AND previous_id IS NOT NULL AND user_id IS NOT NULL
    AND previous_id <> user_id
  GROUP BY previous_id
),
known_ids AS (
  SELECT user_id FROM events WHERE user_id IS NOT NULL
  UNION
  SELECT user_id FROM anonymous_links
),
final_ids AS (
  SELECT k.user_id AS old_id, COALESCE(r6.user_id, r5.user_id, r4.user_id, r3.user_id, r2.user_id, r1.user_id, k.user_id) AS user_id
  FROM known_ids AS k
  LEFT JOIN renamed AS r1 ON r1.old_id = k.user_id
  LEFT JOIN renamed AS r2 ON r2.old_id = r1.user_id
  LEFT JOIN renamed AS r3 ON r3.old_id = r2.user_id
  LEFT JOIN renamed AS r4 ON r4.old_id = r3.user_id
  LEFT JOIN renamed AS r5 ON r5.old_id = r4.user_id
  LEFT JOIN renamed AS r6 ON r6.old_id = r5.user_id
),
first_links AS (
  SELECT key, ARG_MIN(user_id, {'linked_at': timestamp, 'user_id': user_id}) AS user_id
  FROM anonymous_links GROUP BY key
)
SELECT 'anon:' || a.key AS user_key, f.user_id
FROM first_links AS a JOIN final_ids AS f ON f.old_id = a.user_id
UNION ALL
SELECT old_id AS user_key, user_id FROM final_ids
"""

# Email and name are extracted before the join, so Spark shuffles two short
# columns instead of every event's traits and context JSON.
USERS_SQL = f"""
WITH profile_events AS (
  SELECT COALESCE(user_id, 'anon:' || anonymous_id) AS user_key, type, group_id, timestamp,
         {_EMAIL} AS email, {_USER_NAME} AS name
  FROM events
),
linked AS (
  SELECT l.user_id, e.type, e.group_id, e.timestamp, e.email, e.name
  FROM profile_events AS e
  JOIN user_links AS l ON l.user_key = e.user_key
),
profiles AS (
  SELECT user_id,
         ARG_MAX(email, {{'seen_at': timestamp, 'email': email}})
           FILTER (WHERE type <> 'group' AND email IS NOT NULL) AS email,
         ARG_MAX(name, {{'seen_at': timestamp, 'name': name}})
           FILTER (WHERE type <> 'group' AND name IS NOT NULL) AS name,
         ARG_MAX(group_id, {{'seen_at': timestamp, 'group_id': group_id}})
           FILTER (WHERE group_id IS NOT NULL) AS group_id,
         MIN(timestamp) AS first_seen,
         MAX(timestamp) AS last_seen
  FROM linked
  GROUP BY user_id
),
domains AS (
  SELECT *, {ACCOUNT_DOMAIN_SQL_FUNCTION}(email) AS domain FROM profiles
)
SELECT user_id, email, name,
       CASE WHEN group_id IS NOT NULL THEN group_id
            WHEN domain IS NOT NULL THEN domain
            ELSE 'user:' || user_id END AS account_id,
       CASE WHEN group_id IS NOT NULL THEN 'group'
            WHEN domain IS NOT NULL THEN 'domain'
            ELSE 'personal' END AS joined_by,
       domain,
       first_seen, last_seen
FROM domains
"""

# Group traits merge per trait, as in Segment's group spec: a later group call
# updates the traits it names and keeps the others. Repeated calls with the same
# traits collapse to their latest time first, so a workspace that sends a group
# call on every page load hands the merge function a short list.
# The most common member email domain names an account whose group traits give
# none; on a tie the alphabetically first domain wins.
ACCOUNTS_SQL = f"""
WITH group_calls AS (
  SELECT group_id, CAST(traits AS VARCHAR) AS traits, MAX(timestamp) AS called_at
  FROM events WHERE type = 'group' AND traits IS NOT NULL
  GROUP BY group_id, CAST(traits AS VARCHAR)
),
group_traits AS (
  SELECT group_id,
         {MERGE_TRAITS_SQL_FUNCTION}(LIST({{'called_at': called_at, 'traits': traits}})) AS traits
  FROM group_calls
  GROUP BY group_id
),
domain_votes AS (
  SELECT account_id, domain,
         ROW_NUMBER() OVER (PARTITION BY account_id ORDER BY COUNT(*) DESC, domain) AS rank
  FROM resolved_users
  WHERE domain IS NOT NULL
  GROUP BY account_id, domain
),
members AS (
  SELECT account_id, MIN(joined_by) AS kind, COUNT(*) AS users, MIN(first_seen) AS first_seen,
         MIN(COALESCE(name, email, user_id)) AS member_name
  FROM resolved_users
  GROUP BY account_id
)
SELECT m.account_id,
       COALESCE(
         {ACCOUNT_DOMAIN_SQL_FUNCTION}('x@' || regexp_replace(COALESCE(t.traits ->> '$.domain', t.traits ->> '$.website', ''),
                                                        '^[a-z]+://|/.*$', '', 'g')),
         v.domain) AS domain,
       COALESCE(t.traits ->> '$.name',
                CASE WHEN m.kind = 'personal' THEN m.member_name END,
                v.domain, m.account_id) AS name,
       m.kind, t.traits, m.users, m.first_seen
FROM members AS m
LEFT JOIN group_traits AS t ON t.group_id = m.account_id
LEFT JOIN domain_votes AS v ON v.account_id = m.account_id AND v.rank = 1
"""

USER_KEYS_SQL = """
SELECT l.user_key, l.user_id, u.account_id
FROM user_links AS l JOIN resolved_users AS u ON u.user_id = l.user_id
"""

# Each statement's result is kept under its name for the statements after it.
RESOLUTION_STEPS = (
    ("user_links", USER_LINKS_SQL),
    ("resolved_users", USERS_SQL),
    ("resolved_accounts", ACCOUNTS_SQL),
    ("resolved_user_keys", USER_KEYS_SQL),
)


def merge_group_traits(calls: list[dict]) -> str | None:
    """Merge group calls' traits oldest first, so each trait keeps its latest value.

    ``calls`` contains dicts with ``called_at`` and ``traits`` (JSON text). Calls
    at the same time apply in order of their text, so the result never depends
    on row order. Traits that are not a JSON object are skipped, as the JSON
    functions of DuckDB and Spark return NULL for them.

    >>> merge_group_traits([
    ...     {"called_at": 2, "traits": '{"plan": "team"}'},
    ...     {"called_at": 1, "traits": '{"plan": "free", "seats": 3}'},
    ... ])
    '{"plan":"team","seats":3}'
    >>> merge_group_traits([{"called_at": 1, "traits": "[1, 2]"}]) is None
    True
    """
    merged: dict = {}
    for call in sorted(calls, key=lambda call: (call["called_at"], call["traits"])):
        try:
            traits = orjson.loads(call["traits"])
        except orjson.JSONDecodeError:
            continue
        if isinstance(traits, dict):
            merged.update(traits)
    if not merged:
        return None
    return orjson.dumps(merged, option=orjson.OPT_SORT_KEYS).decode()


def _merge_group_traits_arrow(calls: pa.Array) -> pa.Array:
    return pa.array([merge_group_traits(item or []) for item in calls.to_pylist()], type=pa.string())


def _account_domain_arrow(emails: pa.Array) -> pa.Array:
    return pa.array([account_domain(email) for email in emails.to_pylist()], type=pa.string())


# The Python functions the statements call, each taking and returning a
# pyarrow.Array of strings; engines register them under these names.
SQL_FUNCTIONS: dict[str, Callable[[pa.Array], pa.Array]] = {
    ACCOUNT_DOMAIN_SQL_FUNCTION: _account_domain_arrow,
    MERGE_TRAITS_SQL_FUNCTION: _merge_group_traits_arrow,
}


class StatementRunner(Protocol):
    """A connection that runs the resolution statements, such as DuckDB (temp tables) or Spark (temp views)."""

    dialect: str

    def materialize(self, name: str, sql: str) -> None:
        """Run a query and keep its result under ``name`` for the next statements."""


def resolution_statements(dialect: str = "duckdb") -> list[tuple[str, str]]:
    """Return the (result name, SQL) pairs of resolution in run order, in a SQLGlot dialect."""
    if dialect == "duckdb":
        return [(name, sql.strip()) for name, sql in RESOLUTION_STEPS]
    return [
        (name, sqlglot.transpile(sql, read="duckdb", write=dialect)[0])
        for name, sql in RESOLUTION_STEPS
    ]


def run_resolution(runner: StatementRunner) -> None:
    """Run every resolution statement, keeping each result under its step name."""
    for name, sql in resolution_statements(runner.dialect):
        runner.materialize(name, sql)


def replace_identity(store: Store, users: str, accounts: str, user_keys: str) -> dict[str, int]:
    """Replace the store's users, accounts and user_keys with relations it can read; return counts.

    Run it inside one transaction, so the three tables change together.
    """
    conn = store.conn
    conn.execute("DELETE FROM users")
    conn.execute(
        "INSERT INTO users SELECT user_id, email, name, account_id, joined_by, first_seen, last_seen"
        f" FROM {users}"
    )
    conn.execute("DELETE FROM accounts")
    conn.execute(
        f"INSERT INTO accounts SELECT account_id, domain, name, kind, traits, users, first_seen FROM {accounts}"
    )
    conn.execute("DELETE FROM user_keys")
    conn.execute(f"INSERT INTO user_keys SELECT user_key, user_id, account_id FROM {user_keys}")
    return {
        "users": store.scalar("SELECT count(*) FROM users"),
        "accounts": store.scalar("SELECT count(*) FROM accounts"),
    }


class DuckDBRunner:
    """Runs the statements in a DuckDB connection, keeping results as temp tables."""

    dialect = "duckdb"

    def __init__(self, conn: duckdb.DuckDBPyConnection):
        self.conn = conn
        register_merge_traits(conn)

    def materialize(self, name: str, sql: str) -> None:
        self.conn.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS {sql}")

    def drop_results(self) -> None:
        for name, _ in RESOLUTION_STEPS:
            self.conn.execute(f"DROP TABLE IF EXISTS {name}")


def register_merge_traits(conn: duckdb.DuckDBPyConnection) -> None:
    """Register ``upsignal_merge_traits`` on a DuckDB connection unless it is there already.

    The store registers it, with ``upsignal_account_domain``, whenever it opens.
    """
    registered = conn.execute(
        "SELECT count(*) FROM duckdb_functions() WHERE function_name = ?", [MERGE_TRAITS_SQL_FUNCTION]
    ).fetchall()[0][0]
    if registered:
        return
    call = duckdb.struct_type({"called_at": duckdb.sqltype("TIMESTAMP"), "traits": duckdb.sqltype("VARCHAR")})
    conn.create_function(
        MERGE_TRAITS_SQL_FUNCTION,
        SQL_FUNCTIONS[MERGE_TRAITS_SQL_FUNCTION],
        [duckdb.list_type(call)],
        duckdb.sqltype("VARCHAR"),
        type="arrow",
        null_handling="special",
        side_effects=False,
    )


def resolve_accounts(store: Store) -> dict[str, int]:
    """Rebuild users, accounts and user_keys from all stored events; return counts."""
    started = time.perf_counter()
    runner = DuckDBRunner(store.conn)
    with store.transaction():
        run_resolution(runner)
        counts = replace_identity(store, "resolved_users", "resolved_accounts", "resolved_user_keys")
        runner.drop_results()
    log.info(
        "resolved %d users into %d accounts in %.2f s",
        counts["users"], counts["accounts"], time.perf_counter() - started,
    )
    return counts
