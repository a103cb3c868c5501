"""Resolve users into accounts, in SQL so every engine runs the same statements.

A user joins, in order of precedence:
1. the group of their latest group call (``group`` message or ``context.groupId``);
2. else the registrable domain of their email, unless it is free mail or disposable;
3. else a personal account ``user:<userId>``.

An anonymousId joins the user that a message names it with (an identify or any
other message carrying both ids, or an alias's previousId), taking the earliest
such link; an alias also moves a former userId to the new one. Anonymous ids
that never link to a user belong to no account.

The statements read ``events`` and the SQL function
``upsignal_account_domain(email)`` (see identity.domains); each returns the
full contents of one table, rebuilt from scratch on every run.
"""

from __future__ import annotations

import logging
import time

from upsignal.store import Store

log = logging.getLogger(__name__)

# User traits come from identify calls and context.traits; a group call's traits describe the account.
_EMAIL = "lower(trim(COALESCE(traits ->> '$.email', context ->> '$.traits.email')))"
_USER_NAME = "COALESCE(traits ->> '$.name', context ->> '$.traits.name')"

# user_key -> final user_id, before accounts are known.
USER_LINKS_SQL = """
WITH anonymous_links AS (
  SELECT anonymous_id AS key, user_id, timestamp FROM events
  WHERE user_id IS NOT NULL AND anonymous_id IS NOT NULL
  UNION ALL
  SELECT previous_id, user_id, timestamp FROM events
  WHERE type = 'alias' AND previous_id IS NOT NULL AND user_id IS NOT NULL
),
renamed AS (
  SELECT previous_id AS old_id, ARG_MIN(user_id, timestamp) AS user_id FROM events
  WHERE type = 'alias' AND previous_id IS NOT NULL AND user_id IS NOT NULL
    AND previous_id <> user_id
  GROUP BY previous_id
),
known_ids AS (
  SELECT DISTINCT user_id FROM events WHERE user_id IS NOT NULL
)
SELECT 'anon:' || key AS user_key, ARG_MIN(user_id, timestamp) AS user_id
FROM anonymous_links GROUP BY key
UNION ALL
SELECT k.user_id AS user_key, COALESCE(r.user_id, k.user_id) AS user_id
FROM known_ids AS k LEFT JOIN renamed AS r ON r.old_id = k.user_id
"""

USERS_SQL = f"""
WITH linked AS (
  SELECT l.user_id, e.type, e.group_id, e.timestamp, e.traits, e.context
  FROM events AS e
  JOIN user_links AS l ON l.user_key = COALESCE(e.user_id, 'anon:' || e.anonymous_id)
),
profiles AS (
  SELECT user_id,
         ARG_MAX({_EMAIL}, timestamp)
           FILTER (WHERE type <> 'group' AND {_EMAIL} IS NOT NULL) AS email,
         ARG_MAX({_USER_NAME}, timestamp)
           FILTER (WHERE type <> 'group' AND {_USER_NAME} IS NOT NULL) AS name,
         ARG_MAX(group_id, timestamp) FILTER (WHERE group_id IS NOT NULL) AS group_id,
         MIN(timestamp) AS first_seen,
         MAX(timestamp) AS last_seen
  FROM linked
  GROUP BY user_id
),
domains AS (
  SELECT *, upsignal_account_domain(email) AS domain FROM profiles
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

# Group traits merge per trait, as in Segment's group spec. A later group call
# updates the traits it names and keeps the others.
ACCOUNTS_SQL = """
WITH trait_values AS (
  SELECT e.group_id, t.key, ARG_MAX(t.value, e.timestamp) AS value
  FROM events AS e, json_each(e.traits) AS t
  WHERE e.type = 'group' AND e.traits IS NOT NULL
  GROUP BY e.group_id, t.key
),
group_traits AS (
  SELECT group_id, json_group_object(key, value) AS traits
  FROM trait_values
  GROUP BY group_id
),
members AS (
  SELECT account_id, MIN(joined_by) AS kind, COUNT(*) AS users, MIN(first_seen) AS first_seen,
         MODE(domain) AS member_domain, MIN(COALESCE(name, email, user_id)) AS member_name
  FROM resolved_users
  GROUP BY account_id
)
SELECT m.account_id,
       COALESCE(
         upsignal_account_domain('x@' || regexp_replace(COALESCE(t.traits ->> '$.domain', t.traits ->> '$.website', ''),
                                                        '^[a-z]+://|/.*$', '', 'g')),
         m.member_domain) AS domain,
       COALESCE(t.traits ->> '$.name',
                CASE WHEN m.kind = 'personal' THEN m.member_name END,
                m.member_domain, m.account_id) AS name,
       m.kind, t.traits, m.users, m.first_seen
FROM members AS m
LEFT JOIN group_traits AS t ON t.group_id = m.account_id
"""

USER_KEYS_SQL = """
SELECT l.user_key, l.user_id, u.account_id
FROM user_links AS l JOIN resolved_users AS u ON u.user_id = l.user_id
"""


def resolve_accounts(store: Store) -> dict[str, int]:
    """Rebuild users, accounts and user_keys from all stored events; return counts."""
    started = time.perf_counter()
    conn = store.conn
    with store.transaction():
        conn.execute(f"CREATE OR REPLACE TEMP TABLE user_links AS {USER_LINKS_SQL}")
        conn.execute(f"CREATE OR REPLACE TEMP TABLE resolved_users AS {USERS_SQL}")
        conn.execute("DELETE FROM users")
        conn.execute(
            "INSERT INTO users SELECT user_id, email, name, account_id, joined_by, first_seen, last_seen"
            " FROM resolved_users"
        )
        conn.execute("DELETE FROM accounts")
        conn.execute(f"INSERT INTO accounts {ACCOUNTS_SQL}")
        conn.execute("DELETE FROM user_keys")
        conn.execute(f"INSERT INTO user_keys {USER_KEYS_SQL}")
        conn.execute("DROP TABLE user_links")
        conn.execute("DROP TABLE resolved_users")
    counts = {
        "users": store.scalar("SELECT count(*) FROM users"),
        "accounts": store.scalar("SELECT count(*) FROM accounts"),
    }
    log.info(
        "resolved %d users into %d accounts in %.2f s",
        counts["users"], counts["accounts"], time.perf_counter() - started,
    )
    return counts
