"""Re-resolve only the users and accounts that new events can change, with the full resolution's SQL.

``identity.resolve.resolve_accounts`` rebuilds users, accounts and user_keys
from every event, which takes seconds on millions of events. The live scorer
instead runs the same statements over just the events that decide the touched
identities, shadowing the ``events``, ``user_links`` and ``resolved_users``
names with common table expressions, and replaces only the affected rows. The
result equals a full rebuild because each output row depends only on these
events:

- the link of a user key (``anon:<anonymousId>`` or a userId) on the events
  naming that anonymousId or userId, and on alias calls (all of them are
  read, because a chain of aliases can pass through any id; they are few);
- so a new alias also changes every key whose link ends at its previousId,
  and those keys are re-resolved too;
- a user's row on the events of every key linked to that user;
- an account's row on its members' rows and on group calls for its groupId;
- a user's account only on that user's own events.

The scorer's connection keeps every key's link, resolved or not, in the
temporary table ``live_links``, built once by ``build_links``.
"""

from __future__ import annotations

from upsignal.identity.resolve import ACCOUNTS_SQL, USER_KEYS_SQL, USER_LINKS_SQL, USERS_SQL
from upsignal.store import Store

# Events that decide the links of the keys in touched_keys.
_LINK_EVENTS = """
SELECT * FROM main.events
WHERE user_id IN (SELECT user_key FROM touched_keys)
   OR previous_id IN (SELECT user_key FROM touched_keys)
   OR anonymous_id IN (SELECT anonymous_id FROM touched_anonymous_ids)
   OR previous_id IN (SELECT anonymous_id FROM touched_anonymous_ids)
   OR type = 'alias'
"""


def build_links(store: Store) -> None:
    """Create the scorer's table of every user key's link from all events."""
    store.conn.execute(f"CREATE OR REPLACE TEMP TABLE live_links AS {USER_LINKS_SQL}")


def resolve_touched(store: Store, up_to_seq: int) -> int:
    """Re-resolve the identities in live_touched up to a commit number; return the affected accounts.

    Runs inside the caller's transaction. Affected accounts are added to
    live_pending_accounts, and the processed live_touched rows are deleted.
    """
    conn = store.conn
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE touched_keys AS SELECT DISTINCT value AS user_key FROM live_touched"
        " WHERE kind = 'user_key' AND seq <= ?", [up_to_seq],
    )
    conn.execute(
        "INSERT INTO touched_keys SELECT user_key FROM live_links"
        " WHERE user_id IN (SELECT user_key FROM touched_keys)"
        " AND user_key NOT IN (SELECT user_key FROM touched_keys)"
    )
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE touched_anonymous_ids AS SELECT substr(user_key, 6) AS anonymous_id"
        " FROM touched_keys WHERE starts_with(user_key, 'anon:')"
    )
    conn.execute(
        f"CREATE OR REPLACE TEMP TABLE new_links AS WITH events AS ({_LINK_EVENTS})"
        f" SELECT * FROM ({USER_LINKS_SQL}) WHERE user_key IN (SELECT user_key FROM touched_keys)"
    )
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE affected_users AS"
        " SELECT user_id FROM live_links WHERE user_key IN (SELECT user_key FROM touched_keys)"
        " UNION SELECT user_id FROM new_links"
    )
    conn.execute("DELETE FROM live_links WHERE user_key IN (SELECT user_key FROM touched_keys)")
    conn.execute("INSERT INTO live_links SELECT user_key, user_id FROM new_links")

    _resolve_users(store)
    conn.execute(
        "CREATE OR REPLACE TEMP TABLE affected_accounts AS"
        " SELECT account_id FROM users WHERE user_id IN (SELECT user_id FROM affected_users)"
        " UNION SELECT account_id FROM live_resolved_users"
        " UNION SELECT value FROM live_touched WHERE kind = 'group' AND seq <= ?", [up_to_seq],
    )
    _replace_users(store)
    _resolve_accounts(store)

    conn.execute("INSERT INTO live_pending_accounts SELECT account_id FROM affected_accounts")
    conn.execute("DELETE FROM live_touched WHERE seq <= ?", [up_to_seq])
    affected = store.scalar("SELECT count(*) FROM affected_accounts")
    for table in ("touched_keys", "touched_anonymous_ids", "new_links", "affected_users", "affected_accounts",
                  "live_resolved_users"):
        conn.execute(f"DROP TABLE {table}")
    return affected


def _resolve_users(store: Store) -> None:
    """Build live_resolved_users: the full resolution's rows for the affected users."""
    store.conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE live_resolved_users AS
        WITH user_links AS (
          SELECT * FROM live_links WHERE user_id IN (SELECT user_id FROM affected_users)
        ),
        events AS (
          SELECT * FROM main.events
          WHERE COALESCE(user_id, 'anon:' || anonymous_id) IN (SELECT user_key FROM user_links)
        )
        SELECT * FROM ({USERS_SQL})
        """
    )


def _replace_users(store: Store) -> None:
    conn = store.conn
    conn.execute("DELETE FROM users WHERE user_id IN (SELECT user_id FROM affected_users)")
    conn.execute(
        "INSERT INTO users SELECT user_id, email, name, account_id, joined_by, first_seen, last_seen"
        " FROM live_resolved_users"
    )
    conn.execute(
        "DELETE FROM user_keys WHERE user_key IN (SELECT user_key FROM touched_keys)"
        " OR user_id IN (SELECT user_id FROM affected_users)"
    )
    conn.execute(
        f"""
        INSERT INTO user_keys
        WITH user_links AS (
          SELECT * FROM live_links WHERE user_id IN (SELECT user_id FROM affected_users)
        ),
        resolved_users AS (SELECT * FROM live_resolved_users)
        SELECT * FROM ({USER_KEYS_SQL})
        """
    )


def _resolve_accounts(store: Store) -> None:
    """Rebuild the accounts rows of affected_accounts from their members and group calls."""
    conn = store.conn
    conn.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE live_resolved_accounts AS
        WITH resolved_users AS (
          SELECT user_id, email, name, account_id, joined_by, upsignal_account_domain(email) AS domain,
                 first_seen, last_seen
          FROM users WHERE account_id IN (SELECT account_id FROM affected_accounts)
        ),
        events AS (
          SELECT * FROM main.events
          WHERE type = 'group' AND group_id IN (SELECT account_id FROM affected_accounts)
        )
        SELECT * FROM ({ACCOUNTS_SQL})
        """
    )
    conn.execute("DELETE FROM accounts WHERE account_id IN (SELECT account_id FROM affected_accounts)")
    conn.execute("INSERT INTO accounts SELECT * FROM live_resolved_accounts")
    conn.execute("DROP TABLE live_resolved_accounts")
