"""``accept`` passes a request only if the full check accepts every message, and the loader rebuilds the same rows.

A request that ``accept`` passes is acknowledged without building its rows.
The loader builds them later from the logged body. It must build exactly the
rows of the full check (orjson and ``event_row`` message by message) and reject
none of them.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from upsignal.server.accept import accept
from upsignal.server.ingest import IngestError, check_request, entry_rows

RECEIVED_AT = datetime(2024, 5, 1, 12, 0, 0)
TOLERANCE = timedelta(hours=1)

ids = st.one_of(st.none(), st.text(max_size=5), st.integers(-3, 3), st.just(""), st.text(min_size=256, max_size=257))
timestamps = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(1890, 1, 1), max_value=datetime(3010, 12, 31)).map(lambda moment: moment.isoformat() + "Z"),
    st.sampled_from([
        "2024-05-01T11:59:00.000Z", "2024-05-01T13:30:00.5+01:30", "2024-05-01T12:00:00.123456-07:00",
        "2024-02-29T10:00:00Z", "2023-02-29T10:00:00Z", "2024-04-31T10:00:00Z", "2024-03-31T10:00:00Z",
        "2024-12-31T23:59:59+23:59", "1899-12-31T23:00:00Z", "1900-01-01T00:00:00+01:00", "2999-12-31T23:59:59-01:00",
        "3000-01-01T00:00:00Z", "2024-05-01t12:00:00z", "2024-05-01 12:00:00Z", "2024-05-01T12:00:00.1234567Z",
        "2024-05-01T12:00:00+0100", "2024-05-01T12:00:00", "2024-05-01T12:00Z", "2024-05-01T24:00:00Z",
        "2024-05-01T12:00:00Z\n2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z\n", "yesterday", "",
        "2024-05-01T1\u0661:00:00Z", "\u0662024-05-01T12:00:00Z",
    ]),
    st.integers(0, 2_000_000_000),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=4),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3),
    max_leaves=8,
)
objects = st.one_of(st.none(), st.just({}), st.dictionaries(st.text(max_size=4), json_values, max_size=3),
                    st.just("not an object"), st.just([1]))
contexts = st.one_of(objects, st.fixed_dictionaries({"groupId": st.one_of(st.text(max_size=4), st.integers(-9, 9),
                                                                           st.booleans(), st.none())}))
events = st.one_of(st.none(), st.sampled_from(["Report Run", "", "  ", "\u2003", "\x1c", " x ", 7]),
                   st.text(min_size=8192, max_size=8193))
# Each message starts valid, then up to three fields get an odd value and up to two are left out, so that
# most examples are near the line between what ``accept`` passes and what it hands on.
odd_values = {
    "type": st.sampled_from(["track", "identify", "group", "alias", "page", "screen", "purchase", 5]),
    "messageId": ids, "userId": ids, "anonymousId": ids, "groupId": ids, "previousId": ids, "event": events,
    "name": ids, "timestamp": timestamps, "sentAt": timestamps, "originalTimestamp": timestamps,
    "receivedAt": timestamps, "properties": objects, "traits": objects, "context": contexts,
    "writeKey": st.one_of(st.text(max_size=4), st.integers(-5, 5)), "integrations": objects,
}
valid = st.fixed_dictionaries({
    "type": st.sampled_from(["track", "identify", "group", "alias", "page", "screen"]),
    "messageId": st.just("m-1"), "userId": st.just("ann"), "anonymousId": st.just("a-1"),
    "event": st.just("Report Run"), "groupId": st.just("g-1"), "previousId": st.just("p-1"),
    "timestamp": st.just("2024-05-01T11:59:00.000Z"),
})
odd_fields = st.lists(st.sampled_from(sorted(odd_values)), max_size=3, unique=True).flatmap(
    lambda names: st.fixed_dictionaries({name: odd_values[name] for name in names}))
left_out = st.lists(st.sampled_from(["messageId", "userId", "anonymousId", "event", "groupId", "previousId",
                                     "timestamp", "type"]), max_size=2, unique=True)
messages = st.builds(lambda message, odd, missing: {key: value for key, value in {**message, **odd}.items()
                                                    if key not in missing}, valid, odd_fields, left_out)


def accepted_and_checked(body: bytes, endpoint: str) -> tuple[list, list]:
    """Return the rows the loader builds for an accepted request, and those of the full check of the same body."""
    accepted = check_request(body, endpoint, RECEIVED_AT, TOLERANCE)
    assert accepted.whole
    fast_rows, fast_rejected = entry_rows(accepted.entry(body, endpoint, RECEIVED_AT, "test", TOLERANCE))
    checked = dataclasses.replace(accepted, whole=False)
    slow_rows, slow_rejected = entry_rows(checked.entry(body, endpoint, RECEIVED_AT, "test", TOLERANCE))
    assert fast_rejected == slow_rejected == 0
    assert len(fast_rows) == accepted.accepted
    return fast_rows, slow_rows


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(messages, min_size=1, max_size=3),
       sent_at=st.one_of(st.none(), st.just("2024-05-01T12:00:30Z"), st.just("2024-02-30T00:00:00Z"), st.just(7)))
def test_accepted_batch_rows_match(batch, sent_at):
    body = {"batch": batch}
    if sent_at is not None:
        body["sentAt"] = sent_at
    raw = orjson.dumps(body)
    if accept(raw, "batch") is None:
        return
    fast_rows, slow_rows = accepted_and_checked(raw, "batch")
    assert fast_rows == slow_rows


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=messages, endpoint=st.sampled_from(["track", "identify", "group", "alias", "page", "screen"]),
       without_type=st.booleans())
def test_accepted_single_message_rows_match(message, endpoint, without_type):
    if without_type:
        message = {key: value for key, value in message.items() if key != "type"}
    raw = orjson.dumps(message)
    if accept(raw, endpoint) is None:
        return
    fast_rows, slow_rows = accepted_and_checked(raw, endpoint)
    assert fast_rows == slow_rows


def track(**fields) -> dict:
    return {"type": "track", "event": "Report Run", "userId": "ann", "messageId": "m-1",
            "timestamp": "2024-05-01T11:59:00.000Z", **fields}


def test_common_batch_is_accepted():
    raw = orjson.dumps({"batch": [track(messageId=f"m-{i}", context={"groupId": "acme"}) for i in range(3)],
                        "sentAt": "2024-05-01T12:00:00.000Z"})
    assert accept(raw, "batch").messages == 3
    fast_rows, slow_rows = accepted_and_checked(raw, "batch")
    assert fast_rows == slow_rows
    assert [row[6] for row in fast_rows] == ["acme"] * 3
    assert fast_rows[0][8] == RECEIVED_AT - timedelta(minutes=1)


@pytest.mark.parametrize("raw", [
    # A byte that is not UTF-8 in a field the structs skip: msgspec skips it without checking.
    b'{"batch":[{"type":"track","event":"E","userId":"u","messageId":"m","timestamp":"2024-05-01T12:00:00Z",'
    b'"integrations":"\xff"}]}',
    b'{"batch":[{"type":"track","event":"E","userId":"u","messageId":"m","timestamp":"2024-05-01T12:00:00Z"}],'
    b'"extra":"\xff"}',
    # A lone surrogate in properties.
    b'{"batch":[{"type":"track","event":"E","userId":"u","messageId":"m","timestamp":"2024-05-01T12:00:00Z",'
    b'"properties":{"a":"\\ud800"}}]}',
    # Two timestamps in one string, which a joined check must not take for two.
    b'{"batch":[{"type":"track","event":"E","userId":"u","messageId":"m","timestamp":"2024-05-01T12:00:00Z\\n'
    b'2024-05-01T12:00:00Z"}]}',
    b'{"batch":[{"type":"track","event":"E","userId":"u","messageId":"m","timestamp":"2024-05-01T12:00:00Z"},'
    b'{"type":"track","event":"E","userId":"u","messageId":"n","timestamp":"2023-02-29T12:00:00Z"}]}',
])
def test_odd_bytes_acknowledged_are_built(raw):
    """Whatever the server acknowledges of such a body, the loader builds."""
    try:
        checked = check_request(raw, "batch", RECEIVED_AT, TOLERANCE)
    except IngestError:
        return  # rejected whole with a 400, so nothing was acknowledged
    rows, rejected = entry_rows(checked.entry(raw, "batch", RECEIVED_AT, "test", TOLERANCE))
    assert len(rows) == checked.accepted
    assert rejected == len(checked.rejections)


def test_huge_integers_become_floats():
    """msgspec, which accept() decodes with, keeps such integers exact; the rows are built from orjson's floats."""
    raw = orjson.dumps({"batch": [track()]}).replace(b'"event"', b'"properties":{"big":1180591620717411303424},"event"')
    fast_rows, slow_rows = accepted_and_checked(raw, "batch")
    assert fast_rows == slow_rows
    assert fast_rows[0][10] == '{"big":1.1805916207174113e+21}'


def test_deep_properties_are_stored():
    """orjson reads 1,024 levels but writes 254; json_bytes writes deeper values without recursion."""
    nested = b'{"a":' * 300 + b"1" + b"}" * 300
    raw = orjson.dumps({"batch": [track()]}).replace(b'"event"', b'"properties":' + nested + b',"event"')
    checked = check_request(raw, "batch", RECEIVED_AT, TOLERANCE)
    assert checked.rejections == []
    rows, rejected = entry_rows(checked.entry(raw, "batch", RECEIVED_AT, "test", TOLERANCE))
    assert rejected == 0
    assert rows[0][10].count('{"a":') == 300
