"""The tracking endpoints over real HTTP: auth, limits, errors, gzip, dedupe, clock skew and the admin API."""

from __future__ import annotations

import base64
import json
import gzip
import os
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest

from upsignal.config import ServerSettings
from upsignal.server import ServerOptions, create_app
from upsignal.server import writer as writer_module
from upsignal.server.app import UpsignalApp
from upsignal.server.keys import create_key, revoke_key
from upsignal.server.live import StoreCursor
from upsignal.server.testing import serve_in_thread
from upsignal.store import Store

ADMIN_TOKEN = "test-admin-token"
ERROR_KEYS = {"success", "code", "message", "field", "limit", "stored", "errors"}


@dataclass
class Harness:
    url: str
    key: str
    revoked_key: str
    app: UpsignalApp
    client: httpx.Client

    def post(self, path: str, body: object = None, key: str | None = None, **kwargs) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if key is not False:
            token = base64.b64encode(f"{key or self.key}:".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        if body is not None and "content" not in kwargs:
            kwargs["content"] = orjson.dumps(body)
        return self.client.post(self.url + path, headers=headers, **kwargs)

    def rows(self, sql: str, params: list | None = None) -> list[dict]:
        """Run a query once every acknowledged event is loaded into the store."""
        assert self.app.fastapi.state.writer.wait_loaded(timeout=30)
        store = StoreCursor(self.app.fastapi.state.store)
        try:
            return store.rows(sql, params)
        finally:
            store.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    db = tmp_path_factory.mktemp("ingest") / "ingest.duckdb"
    with Store(db) as store:
        _, key = create_key(store, "web-app")
        revoked, revoked_key = create_key(store, "old-app")
        revoke_key(store, revoked.key_id)
    os.environ["UPSIGNAL_TEST_ADMIN_TOKEN"] = ADMIN_TOKEN
    settings = ServerSettings(scoring_interval_seconds=0.2, admin_token_env="UPSIGNAL_TEST_ADMIN_TOKEN")
    app = create_app(ServerOptions(db=db, settings=settings))
    try:
        with serve_in_thread(app) as running, httpx.Client(timeout=30) as client:
            yield Harness(running.url, key, revoked_key, app, client)
    finally:
        del os.environ["UPSIGNAL_TEST_ADMIN_TOKEN"]


def track(**fields) -> dict:
    return {"userId": "ann", "event": "Report Run", "messageId": str(uuid.uuid4()),
            "timestamp": "2024-03-01T10:00:00Z", **fields}


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["success"] is False
    assert body["code"] == code
    return body


def test_track_with_basic_auth_is_stored(server):
    message = track(properties={"rows": 3}, context={"groupId": "g-1"})
    response = server.post("/v1/track", message)
    assert response.status_code == 200
    assert response.json() == {"success": True, "stored": 1}
    row = server.rows("SELECT * FROM events WHERE message_id = ?", [message["messageId"]])[0]
    assert row["type"] == "track"
    assert row["event"] == "Report Run"
    assert row["source"] == "web-app"
    assert row["group_id"] == "g-1"
    assert orjson.loads(row["properties"]) == {"rows": 3}
    assert row["timestamp"] == datetime(2024, 3, 1, 10)


def test_write_key_in_body_is_accepted(server):
    message = track(writeKey=server.key)
    response = server.post("/v1/track", message, key=False)
    assert response.status_code == 200
    assert server.rows("SELECT count(*) AS n FROM events WHERE message_id = ?", [message["messageId"]])[0]["n"] == 1


@pytest.mark.parametrize("path", ["/v1/identify", "/v1/group", "/v1/alias", "/v1/page", "/v1/screen"])
def test_each_endpoint_stores_its_type(server, path):
    message_type = path.rsplit("/", 1)[1]
    message = {"userId": "bo", "messageId": str(uuid.uuid4()), "groupId": "g-2", "previousId": "anon-bo",
               "name": "Home"}
    response = server.post(path, message)
    assert response.status_code == 200, response.text
    stored = server.rows("SELECT type FROM events WHERE message_id = ?", [message["messageId"]])
    assert stored == [{"type": message_type}]


def test_type_other_than_endpoint_is_rejected(server):
    body = assert_error(server.post("/v1/track", {**track(), "type": "identify"}), 400, "invalid_event")
    assert body["field"] == "type"
    assert "/v1/identify" in body["message"]


@pytest.mark.parametrize("key", [False, "usk_unknown"])
def test_missing_or_unknown_key_is_401(server, key):
    response = server.post("/v1/track", track(), key=key)
    body = assert_error(response, 401, "unauthorized")
    assert body["field"] == "writeKey"
    assert response.headers["www-authenticate"].startswith("Basic")


def test_revoked_key_is_401(server):
    assert_error(server.post("/v1/track", track(), key=server.revoked_key), 401, "unauthorized")


def test_malformed_basic_auth_is_401(server):
    response = server.client.post(server.url + "/v1/track", content=orjson.dumps(track()),
                                  headers={"Authorization": "Basic !!!"})
    assert assert_error(response, 401, "unauthorized")["field"] == "Authorization"


def test_invalid_json_names_position(server):
    body = assert_error(server.post("/v1/track", content=b'{"userId": "ann",'), 400, "invalid_json")
    assert body["field"] == "body"
    assert "column 18" in body["message"]


@pytest.mark.parametrize("content", [b"[1, 2]", b'"text"', b"null", b"7"])
def test_body_that_is_not_object_is_400(server, content):
    body = assert_error(server.post("/v1/track", content=content), 400, "invalid_body")
    assert body["field"] == "body"


@pytest.mark.parametrize(
    ("message", "field", "words"),
    [
        ({"userId": "ann", "messageId": "m-no-event", "timestamp": "2024-03-01T10:00:00Z"}, "", "event is required"),
        ({"event": "Report Run", "timestamp": "2024-03-01T10:00:00Z"}, "", "userId or anonymousId"),
        (track(userId=["ann"]), "userId", "['ann']"),
        (track(timestamp="yesterday"), "timestamp", "yesterday"),
        (track(properties="rows=3"), "properties", "rows=3"),
    ],
)
def test_invalid_message_names_field(server, message, field, words):
    body = assert_error(server.post("/v1/track", message), 400, "invalid_event")
    assert body["field"] == (field or "body")
    assert words in body["message"]
    assert body["stored"] == 0


def test_batch_with_bad_messages_stores_good_ones(server):
    good = [{**track(), "type": "track"} for _ in range(3)]
    bad_type = {"type": "purchase", "userId": "ann"}
    missing_ids = {"type": "track", "event": "Report Run"}
    batch = [good[0], bad_type, good[1], missing_ids, good[2], 42]
    body = assert_error(server.post("/v1/batch", {"batch": batch}), 400, "invalid_event")
    assert body["stored"] == 3
    assert [error["index"] for error in body["errors"]] == [1, 3, 5]
    assert body["errors"][0]["field"] == "type"
    assert body["field"] == "batch[1].type"
    ids = [message["messageId"] for message in good]
    stored = server.rows("SELECT count(*) AS n FROM events WHERE message_id IN (?, ?, ?)", ids)
    assert stored[0]["n"] == 3


@pytest.mark.parametrize(
    ("body", "words"),
    [({}, "'batch' is missing"), ({"batch": {}}, "must be an array"), ({"batch": []}, "is empty")],
)
def test_batch_shape_errors(server, body, words):
    error = assert_error(server.post("/v1/batch", body), 400, "invalid_body")
    assert error["field"] == "batch"
    assert words in error["message"]


def test_event_over_32kb_is_400_with_limit(server):
    message = track(properties={"blob": "x" * 33_000})
    body = assert_error(server.post("/v1/track", message), 400, "request_too_large")
    assert body["limit"] == 32 * 1024
    assert body["field"] == "body"


def test_batch_event_over_32kb_is_rejected_by_index(server):
    small, large = {**track(), "type": "track"}, {**track(properties={"blob": "x" * 33_000}), "type": "track"}
    body = assert_error(server.post("/v1/batch", {"batch": [small, large]}), 400, "event_too_large")
    assert body["errors"] == [{"index": 1, "code": "event_too_large", "field": "", "limit": 32 * 1024,
                               "message": body["errors"][0]["message"]}]
    assert body["stored"] == 1
    assert body["limit"] == 32 * 1024


def test_batch_over_500kb_is_400_with_limit(server):
    batch = [{**track(properties={"blob": "x" * 20_000}), "type": "track"} for _ in range(30)]
    body = assert_error(server.post("/v1/batch", {"batch": batch}), 400, "request_too_large")
    assert body["limit"] == 500 * 1024
    assert body["stored"] == 0


def test_gzip_body_is_accepted(server):
    message = track()
    response = server.post("/v1/track", content=gzip.compress(orjson.dumps(message)),
                           headers={"Content-Encoding": "gzip"})
    assert response.status_code == 200
    assert server.rows("SELECT count(*) AS n FROM events WHERE message_id = ?", [message["messageId"]])[0]["n"] == 1


def test_gzip_bomb_is_stopped_at_limit(server):
    bomb = gzip.compress(b'{"batch": ["' + b"x" * 5_000_000 + b'"]}')
    body = assert_error(server.post("/v1/batch", content=bomb, headers={"Content-Encoding": "gzip"}),
                        400, "request_too_large")
    assert body["limit"] == 500 * 1024


def test_bad_gzip_and_unknown_encoding_are_400(server):
    assert_error(server.post("/v1/track", content=b"not gzip", headers={"Content-Encoding": "gzip"}),
                 400, "invalid_gzip")
    assert_error(server.post("/v1/track", content=b"{}", headers={"Content-Encoding": "br"}),
                 400, "unsupported_encoding")


def test_repeated_message_id_is_stored_once(server):
    message = track()
    duplicates_before = server.rows("SELECT value FROM ingest_counters WHERE name = 'duplicates'")[0]["value"]
    for _ in range(3):
        assert server.post("/v1/track", message).status_code == 200
    assert server.post("/v1/batch", {"batch": [{**message, "type": "track"}]}).status_code == 200
    assert server.rows("SELECT count(*) AS n FROM events WHERE message_id = ?", [message["messageId"]])[0]["n"] == 1
    duplicates = server.rows("SELECT value FROM ingest_counters WHERE name = 'duplicates'")[0]["value"]
    assert duplicates - duplicates_before == 3


def test_backlog_over_bound_is_503_with_retry_after(server, monkeypatch):
    writer = server.app.fastapi.state.writer
    release = threading.Event()
    real_load = writer_module.store_events

    def held_load(*args):
        release.wait(30)
        return real_load(*args)

    monkeypatch.setattr(writer_module, "store_events", held_load)
    monkeypatch.setattr(writer, "max_unloaded_bytes", 1)
    stored, rejected = track(), track()
    try:
        assert server.post("/v1/track", stored).status_code == 200
        response = server.post("/v1/track", rejected)
    finally:
        release.set()

    body = assert_error(response, 503, "unavailable")
    assert response.headers["retry-after"] == "1"
    assert "events behind" in body["message"]
    found = server.rows("SELECT message_id FROM events WHERE message_id IN (?, ?)",
                        [stored["messageId"], rejected["messageId"]])
    assert found == [{"message_id": stored["messageId"]}]


def test_clock_skew_is_corrected_with_sent_at(server):
    # The device clock runs 2 days fast: sentAt and timestamp are both 2 days ahead.
    now = datetime.now(UTC)
    device = now + timedelta(days=2)
    message = track(timestamp=(device - timedelta(minutes=5)).isoformat(), sentAt=device.isoformat())
    assert server.post("/v1/track", message).status_code == 200
    row = server.rows("SELECT timestamp, received_at, timestamp_clamped FROM events WHERE message_id = ?",
                      [message["messageId"]])[0]
    assert row["received_at"] - row["timestamp"] == pytest.approx(timedelta(minutes=5), abs=timedelta(seconds=1))
    assert row["timestamp_clamped"] is False


def test_batch_sent_at_applies_to_its_messages(server):
    now = datetime.now(UTC)
    message = {**track(timestamp=(now - timedelta(hours=3, minutes=10)).isoformat()), "type": "track"}
    body = {"batch": [message], "sentAt": (now - timedelta(hours=3)).isoformat()}
    assert server.post("/v1/batch", body).status_code == 200
    row = server.rows("SELECT timestamp, received_at FROM events WHERE message_id = ?", [message["messageId"]])[0]
    assert row["received_at"] - row["timestamp"] == pytest.approx(timedelta(minutes=10), abs=timedelta(seconds=1))


def test_batch_sent_at_out_of_range_is_400(server):
    """Year 1 at UTC+1 is a time before year 1 in UTC, which Python cannot represent."""
    body = {"batch": [track()], "sentAt": "0001-01-01T00:00:00+01:00"}

    response = server.post("/v1/batch", body)

    assert response.status_code == 400
    assert response.json()["field"] == "sentAt"
    assert "out of the supported date range" in response.json()["message"]


def test_properties_nested_300_levels_are_stored(server):
    """orjson writes at most 254 levels; such properties were a 500 before the row builder fell back."""
    nested: dict = {"leaf": 1}
    for _ in range(300):
        nested = {"a": nested}
    message = track(properties=nested)

    # orjson cannot write the body either, so the standard library does.
    assert server.post("/v1/track", content=json.dumps(message).encode()).status_code == 200
    row = server.rows("SELECT properties FROM events WHERE message_id = ?", [message["messageId"]])[0]
    assert row["properties"].count('{"a":') == 300


# Each case below came from trying to break the server. Before its fix, each was acknowledged and then lost,
# or got a 500, or was stored although the full check rejects it.


@pytest.mark.parametrize("path, body, field", [
    # \u0661 is ARABIC-INDIC DIGIT ONE, which a regular expression's \d matches without the ASCII flag.
    ("/v1/track", {**track(), "timestamp": "2026-12-04T1\u0661:00:00Z"}, "timestamp"),
    ("/v1/batch", {"batch": [{**track(), "type": "track"}], "sentAt": "2026-12-04T1\u0662:00:00Z"}, "sentAt"),
])
def test_timestamp_with_non_ascii_digits_is_400(server, path, body, field):
    response = server.post(path, body)

    assert response.status_code == 400
    assert field in response.text


def test_nesting_1000_levels_is_stored(server):
    """orjson reads up to 1,024 levels; msgspec, which the fast check uses, runs out of stack first."""
    message = track()
    text = json.dumps(message)[:-1] + ', "properties": {"a": ' + "[" * 1000 + "]" * 1000 + "}}"

    assert server.post("/v1/track", content=text.encode()).status_code == 200
    row = server.rows("SELECT properties FROM events WHERE message_id = ?", [message["messageId"]])[0]
    assert row["properties"].count("[") == 1000


def test_nesting_past_1024_levels_is_400(server):
    text = json.dumps(track())[:-1] + ', "properties": {"a": ' + "[" * 1100 + "]" * 1100 + "}}"

    assert_error(server.post("/v1/track", content=text.encode()), 400, "invalid_json")


def test_exponent_numbers_over_32kb_are_400(server):
    """7,000 numbers written 1e9 (28 KB as sent) are 91 KB written as orjson writes them."""
    message = {**track(), "type": "track"}
    text = json.dumps({"batch": [message]})[:-3] + ', "properties": {"n": [' + ",".join(["1e9"] * 7000) + "]}}]}"

    body = assert_error(server.post("/v1/batch", content=text.encode()), 400, "event_too_large")

    assert body["stored"] == 0


def test_untyped_message_near_32kb_is_400(server):
    """The endpoint adds "type":"track" before it measures, which takes this message over the limit."""
    message = track()
    padding = 32_760 - len(orjson.dumps({**message, "properties": {"p": ""}}))
    text = orjson.dumps({**message, "properties": {"p": "x" * padding}})
    assert len(text) == 32_760

    assert_error(server.post("/v1/track", content=text), 400, "event_too_large")


def test_gzip_members_are_joined(server):
    message = track()
    text = orjson.dumps(message)
    content = gzip.compress(text[:20]) + gzip.compress(text[20:])

    response = server.post("/v1/track", content=content, headers={"Content-Encoding": "gzip"})

    assert response.status_code == 200
    assert server.rows("SELECT count(*) AS n FROM events WHERE message_id = ?", [message["messageId"]])[0]["n"] == 1


@pytest.mark.parametrize("trailer", [b"\0junk", gzip.compress(b"garbage")[:6]])
def test_gzip_with_trailing_bytes_is_400(server, trailer):
    content = gzip.compress(orjson.dumps(track())) + trailer

    assert_error(server.post("/v1/track", content=content, headers={"Content-Encoding": "gzip"}), 400,
                 "invalid_gzip")


DEEP = "[" * 1000 + "]" * 1000


@pytest.mark.parametrize("path, text, field", [
    ("/v1/track", '{"event": "E", "messageId": "d1", "userId": "u", "properties": %s}' % DEEP, "properties"),
    ("/v1/track", '{"event": "E", "messageId": "d2", "userId": %s}' % DEEP, "userId"),
    ("/v1/track", '{"type": %s, "event": "E", "messageId": "d3", "userId": "u"}' % DEEP, "type"),
    ("/v1/batch", '{"batch": [{"type": "track", "event": "E", "messageId": "d4", "userId": "u"}], "sentAt": %s}'
     % DEEP, "sentAt"),
    ("/v1/track", '{"event": "E", "messageId": "d5", "userId": "u", "timestamp": {"a": %s}}' % DEEP, "timestamp"),
])
def test_deep_value_in_invalid_field_is_400(server, path, text, field):
    """The error message quoted the value with repr(), which ran out of stack at about 970 levels."""
    response = server.post(path, content=text.encode())

    assert response.status_code == 400
    assert field in response.json()["field"]


def test_future_timestamp_is_clamped_and_flagged(server):
    message = track(timestamp=(datetime.now(UTC) + timedelta(hours=3)).isoformat())
    assert server.post("/v1/track", message).status_code == 200
    row = server.rows("SELECT timestamp, received_at, timestamp_clamped FROM events WHERE message_id = ?",
                      [message["messageId"]])[0]
    assert row["timestamp_clamped"] is True
    assert row["timestamp"] == row["received_at"]


def test_missing_timestamp_uses_received_at(server):
    message = track()
    del message["timestamp"]
    assert server.post("/v1/track", message).status_code == 200
    row = server.rows("SELECT timestamp, received_at FROM events WHERE message_id = ?", [message["messageId"]])[0]
    assert row["timestamp"] == row["received_at"]


def test_client_received_at_is_ignored(server):
    now = datetime.now(UTC)
    message = track(timestamp=(now + timedelta(days=1)).isoformat(), sentAt=(now + timedelta(days=1)).isoformat(),
                    receivedAt="2020-01-01T00:00:00Z")
    assert server.post("/v1/track", message).status_code == 200
    row = server.rows("SELECT timestamp, received_at FROM events WHERE message_id = ?", [message["messageId"]])[0]
    assert abs(row["timestamp"] - row["received_at"]) < timedelta(seconds=1)


def test_live_scoring_updates_touched_account(server):
    messages = [{"type": "identify", "userId": "cy", "messageId": str(uuid.uuid4()),
                 "traits": {"email": "cy@livescore.io"}}]
    messages += [{"type": "track", "userId": "cy", "event": "Report Run", "messageId": str(uuid.uuid4())}
                 for _ in range(12)]
    assert server.post("/v1/batch", {"batch": messages}).status_code == 200
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    deadline = datetime.now() + timedelta(seconds=20)
    while datetime.now() < deadline:
        response = server.client.get(server.url + "/api/accounts/livescore.io", headers=headers)
        if response.status_code == 200:
            break
    assert response.status_code == 200, response.text
    account = response.json()
    assert account["signals"]["reports_run"] == 12
    assert account["score"] == 10
    assert any("12 reports" in reason for reason in account["reasons"])
    listed = server.client.get(server.url + "/api/accounts", params={"tier": "cold"}, headers=headers).json()
    assert "livescore.io" in [item["account_id"] for item in listed["accounts"]]


def test_admin_api_needs_token(server):
    response = server.client.get(server.url + "/api/accounts")
    assert_error(response, 401, "unauthorized")
    response = server.client.get(server.url + "/api/accounts", headers={"Authorization": "Bearer wrong"})
    assert_error(response, 401, "unauthorized")


def test_admin_errors_use_common_shape(server):
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert_error(server.client.get(server.url + "/api/accounts/nobody.example", headers=headers), 404, "not_found")
    body = assert_error(server.client.get(server.url + "/api/accounts", params={"limit": 0}, headers=headers),
                        400, "invalid_request")
    assert body["field"] == "query.limit"
    assert_error(server.client.get(server.url + "/nowhere"), 404, "not_found")


def test_openapi_lists_every_endpoint_and_error(server):
    spec = server.client.get(server.url + "/openapi.json").json()
    for name in ("track", "identify", "group", "alias", "page", "screen", "batch"):
        responses = spec["paths"][f"/v1/{name}"]["post"]["responses"]
        assert set(responses) == {"200", "400", "401", "503"}
    account = spec["paths"]["/api/accounts/{account_id}"]["get"]["responses"]
    assert {"200", "400", "401", "404", "503"} <= set(account)
    assert "422" not in account


def test_rejections_logged_once_per_interval(caplog):
    from upsignal.server.tracking import RejectionLog

    rejections = RejectionLog(interval_seconds=3600)
    with caplog.at_level("WARNING", logger="upsignal.server.tracking"):
        for _ in range(5):
            rejections.record("batch", 400, "invalid_event", "event")
        rejections.record("track", 401, "unauthorized", "writeKey")

    lines = [record.getMessage() for record in caplog.records]
    assert lines == [
        "rejected 1 /v1/batch requests with 400 invalid_event (field event) since start",
        "rejected 1 /v1/track requests with 401 unauthorized (field writeKey) since start",
    ]
    assert rejections.counts[("batch", 400, "invalid_event")] == 4


def test_rejected_request_is_logged(server, caplog, monkeypatch):
    # Earlier tests in this module already logged this rejection within the interval.
    monkeypatch.setattr(server.app.tracking.rejections, "interval_seconds", 0)
    with caplog.at_level("WARNING", logger="upsignal.server.tracking"):
        response = server.post("/v1/track", {"type": "track", "userId": "ann", "timestamp": "2024-03-01T10:00:00Z"})

    assert response.status_code == 400
    assert any("/v1/track requests with 400" in record.getMessage() for record in caplog.records)


def test_get_on_tracking_path_is_405(server):
    response = server.client.get(server.url + "/v1/track")

    body = assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"
    assert body["message"]
