"""Generate Segment-shaped JSON lines for benchmarks: accounts, users and their usage.

Each account has 1-5 users. Every user first identifies with a company email
and joins their account by a group call; then the users send track events from
the default model's vocabulary spread over eight weeks, account by account,
until the file holds the requested number of events.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

START = datetime(2024, 1, 1)
SPAN_SECONDS = 56 * 24 * 3600
EVENT_NAMES = (
    ["Report Run"] * 40 + ["Query Run"] * 20 + ["Project Created"] * 5 + ["Project Shared"] * 5
    + ["Invite Sent"] * 3 + ["Account Added User"] * 2 + ["Signed Up"] * 1 + ["Dashboard Viewed"] * 24
)
CONTEXT = {"library": {"name": "analytics-python", "version": "2.3.0"}, "ip": "203.0.113.7"}


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds") + "Z"


def _profiles(rng: random.Random, users_per_account: list[int]) -> Iterator[dict[str, Any]]:
    for account, users in enumerate(users_per_account):
        plan = "free" if account % 3 else "trial"
        employees = rng.randint(2, 200)
        for member in range(users):
            user_id = f"u{account}-{member}"
            moment = _iso(START + timedelta(seconds=rng.randrange(SPAN_SECONDS // 8)))
            yield {"type": "identify", "messageId": f"id-{user_id}", "userId": user_id, "timestamp": moment,
                   "traits": {"email": f"person{member}@company{account}.example", "name": f"Person {member}"}}
            yield {"type": "group", "messageId": f"gr-{user_id}", "userId": user_id, "groupId": f"acct-{account}",
                   "timestamp": moment,
                   "traits": {"name": f"Company {account}", "plan": plan, "employees": employees}}


def _usage(rng: random.Random, users_per_account: list[int], per_user: int) -> Iterator[dict[str, Any]]:
    for account, users in enumerate(users_per_account):
        for member in range(users):
            user_id = f"u{account}-{member}"
            for index in range(rng.randint(per_user // 2, per_user * 3 // 2)):
                yield {
                    "type": "track", "messageId": f"ev-{user_id}-{index}", "userId": user_id,
                    "event": rng.choice(EVENT_NAMES),
                    "properties": {"project_id": f"p{account}-{rng.randrange(8)}", "rows": rng.randrange(10_000)},
                    "context": CONTEXT,
                    "timestamp": _iso(START + timedelta(seconds=rng.randrange(SPAN_SECONDS))),
                }


def generate(path: Path, events: int, accounts: int, seed: int = 7) -> int:
    """Write exactly ``events`` messages for ``accounts`` accounts to ``path``; return the count written.

    Users get slightly more track events than needed on average and the file
    is cut at ``events``, so the last accounts may have fewer.
    """
    rng = random.Random(seed)
    users_per_account = [rng.randint(1, 5) for _ in range(accounts)]
    user_count = sum(users_per_account)
    per_user = max(1, int((events - 2 * user_count) / user_count * 1.05) + 1)
    written = 0
    with path.open("wb") as handle:
        buffer: list[bytes] = []
        for streams in (_profiles(rng, users_per_account), _usage(rng, users_per_account, per_user)):
            for record in streams:
                if written + len(buffer) >= events:
                    break
                buffer.append(orjson.dumps(record))
                if len(buffer) >= 20_000:
                    handle.write(b"\n".join(buffer) + b"\n")
                    written += len(buffer)
                    buffer = []
        if buffer:
            handle.write(b"\n".join(buffer) + b"\n")
            written += len(buffer)
    return written
