"""Generate Segment-shaped JSON lines for benchmarks: accounts, users and their usage.

Each account has 1-5 users who identify with a company email, join the
account by a group call and then send track events from the default model's
vocabulary over eight weeks.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from pathlib import Path

import orjson

START = datetime(2024, 1, 1)
SPAN_SECONDS = 56 * 24 * 3600
EVENT_NAMES = (
    ["Report Run"] * 40 + ["Query Run"] * 20 + ["Project Created"] * 5 + ["Project Shared"] * 5
    + ["Invite Sent"] * 3 + ["Account Added User"] * 2 + ["Signed Up"] * 1 + ["Dashboard Viewed"] * 24
)


def _iso(moment: datetime) -> str:
    return moment.isoformat(timespec="milliseconds") + "Z"


def generate(path: Path, events: int, accounts: int, seed: int = 7) -> int:
    """Write about ``events`` messages for ``accounts`` accounts to ``path``; return the count written."""
    rng = random.Random(seed)
    written = 0
    users_per_account = [rng.randint(1, 5) for _ in range(accounts)]
    user_count = sum(users_per_account)
    track_per_user = max(1, (events - 2 * user_count) // user_count)
    with path.open("wb") as handle:
        buffer = []
        for account, users in enumerate(users_per_account):
            domain = f"company{account}.example.com"
            plan = "free" if account % 3 else "trial"
            for member in range(users):
                user_id = f"u{account}-{member}"
                signup = START + timedelta(seconds=rng.randrange(SPAN_SECONDS // 4))
                buffer.append({
                    "type": "identify", "messageId": f"id-{user_id}", "userId": user_id,
                    "traits": {"email": f"person{member}@{domain}", "name": f"Person {member}"},
                    "timestamp": _iso(signup),
                })
                buffer.append({
                    "type": "group", "messageId": f"gr-{user_id}", "userId": user_id,
                    "groupId": f"acct-{account}",
                    "traits": {"name": f"Company {account}", "plan": plan, "employees": rng.randint(2, 200)},
                    "timestamp": _iso(signup),
                })
                for index in range(rng.randint(track_per_user // 2, track_per_user * 3 // 2)):
                    name = rng.choice(EVENT_NAMES)
                    moment = signup + timedelta(seconds=rng.randrange(SPAN_SECONDS))
                    buffer.append({
                        "type": "track", "messageId": f"ev-{user_id}-{index}", "userId": user_id,
                        "event": name,
                        "properties": {"project_id": f"p{account}-{rng.randrange(8)}", "rows": rng.randrange(10_000),
                                       "plan": plan},
                        "context": {"library": {"name": "analytics-python", "version": "2.3.0"},
                                    "ip": "203.0.113.7"},
                        "timestamp": _iso(moment),
                    })
            if len(buffer) >= 20_000:
                handle.write(b"\n".join(orjson.dumps(record) for record in buffer) + b"\n")
                written += len(buffer)
                buffer = []
        if buffer:
            handle.write(b"\n".join(orjson.dumps(record) for record in buffer) + b"\n")
            written += len(buffer)
    return written
