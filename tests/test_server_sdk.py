"""The official Segment and RudderStack Python SDKs against the server, with forced 503s that make them retry."""

from __future__ import annotations

import random
import threading
import time

import pytest

from upsignal.config import ServerSettings
from upsignal.server import ServerOptions, create_app
from upsignal.server.live import StoreCursor
from upsignal.server.testing import serve_in_thread
from upsignal.server.keys import create_key
from upsignal.store import Store

MESSAGES = 5000


class FlakyProxy:
    """Wraps the server's ASGI app so some /v1/batch requests fail with 503.

    Every 5th request is refused before it reaches the server; every 7th is
    stored and then answered with 503 anyway, as when an acknowledgement is
    lost, so the SDK's retry must be deduplicated by messageId.
    """

    def __init__(self, app):
        self.app = app
        self.requests = 0
        self.refused = 0
        self.lost_acks = 0
        self._lock = threading.Lock()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/batch":
            await self.app(scope, receive, send)
            return
        with self._lock:
            self.requests += 1
            number = self.requests
        if number % 5 == 0:
            self.refused += 1
            while (await receive()).get("more_body"):
                pass
            await _send_503(send)
            return
        if number % 7 == 0:
            self.lost_acks += 1
            status = {}

            async def swallow(message):
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]

            await self.app(scope, receive, swallow)
            assert status["code"] == 200
            await _send_503(send)
            return
        await self.app(scope, receive, send)


async def _send_503(send):
    body = b'{"success":false,"code":"unavailable","message":"forced by the test"}'
    await send({"type": "http.response.start", "status": 503,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def send_mixed_messages(client, count: int, rng: random.Random) -> list[str]:
    """Send ``count`` messages of every type through an SDK client; return their messageIds."""
    ids = []
    for number in range(count):
        user = f"user-{rng.randint(1, 300)}"
        kind = number % 10
        if kind < 5:
            ok, message = client.track(user_id=user, event="Report Run", properties={"n": number})
        elif kind == 5:
            ok, message = client.identify(user_id=user, traits={"email": f"{user}@example-{number % 40}.com"})
        elif kind == 6:
            ok, message = client.group(user_id=user, group_id=f"team-{number % 50}", traits={"plan": "free"})
        elif kind == 7:
            ok, message = client.page(user_id=user, name="Pricing", properties={"path": "/pricing"})
        elif kind == 8:
            ok, message = client.screen(user_id=user, name="Dashboard")
        else:
            ok, message = client.alias(previous_id=f"anon-{number}", user_id=user)
        assert ok, f"the SDK did not queue message {number}"
        ids.append(message["messageId"])
    return ids


@pytest.fixture
def flaky_server(tmp_path):
    db = tmp_path / "sdk.duckdb"
    with Store(db) as store:
        _, key = create_key(store, "sdk-test")
    app = create_app(ServerOptions(db=db, settings=ServerSettings(scoring_interval_seconds=1)))
    proxy = FlakyProxy(app)
    with serve_in_thread(proxy) as running:
        yield running.url, key, proxy, app


def stored_ids(app) -> tuple[int, set[str]]:
    store = StoreCursor(app.fastapi.state.store)
    try:
        total = store.scalar("SELECT count(*) FROM events")
        ids = {row[0] for row in store.conn.execute("SELECT message_id FROM events").fetchall()}
    finally:
        store.close()
    return total, ids


def wait_for_events(app, expected: int, timeout: float = 60) -> tuple[int, set[str]]:
    deadline = time.monotonic() + timeout
    total, ids = stored_ids(app)
    while total < expected and time.monotonic() < deadline:
        time.sleep(0.2)
        total, ids = stored_ids(app)
    return total, ids


@pytest.mark.slow
def test_segment_sdk_retries_store_each_event_once(flaky_server):
    from segment.analytics import Client

    url, key, proxy, app = flaky_server
    errors = []
    client = Client(write_key=key, host=url, upload_size=100, max_queue_size=MESSAGES + 100,
                    on_error=lambda error, batch: errors.append(error), gzip=True)
    sent = send_mixed_messages(client, MESSAGES, random.Random(1))
    client.flush()
    client.join()

    total, ids = wait_for_events(app, MESSAGES)
    assert errors == []
    assert proxy.refused > 0
    assert proxy.lost_acks > 0
    assert total == MESSAGES
    assert ids == set(sent)


@pytest.mark.slow
def test_rudderstack_sdk_retries_store_each_event_once(flaky_server):
    from rudderstack.analytics.client import Client

    url, key, proxy, app = flaky_server
    errors = []
    client = Client(write_key=key, host=url, upload_size=100, max_queue_size=MESSAGES + 100,
                    on_error=lambda error, batch: errors.append(error), gzip=True)
    sent = send_mixed_messages(client, MESSAGES, random.Random(2))
    client.flush()
    client.join()

    total, ids = wait_for_events(app, MESSAGES)
    assert errors == []
    assert proxy.refused > 0
    assert proxy.lost_acks > 0
    assert total == MESSAGES
    assert ids == set(sent)
