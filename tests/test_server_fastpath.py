"""The plain-Python fast path builds exactly the row that the pydantic model path builds."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upsignal.errors import InvalidEventError
from upsignal.events.rows import RowContext, _checked_row, _fast_row

RECEIVED_AT = datetime(2024, 5, 1, 12, 0, 0)

ids = st.one_of(st.none(), st.text(max_size=6), st.integers(-5, 5), st.booleans(), st.text(min_size=257, max_size=260))
timestamps = st.one_of(
    st.none(),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(lambda moment: moment.isoformat() + "Z"),
    st.sampled_from(["2024-05-01T12:00:00Z", "2024-05-01T13:00:00Z", "2024-05-01T13:00:30Z", "2024-05-01T13:00:31Z", "2024-05-01T13:30:00.5+01:30", "2024-05-01T12:00:00.123456-07:00",
                     "2024-05-01 12:00:00", "2024-05-01", "2024-02-30T00:00:00Z", "2024-05-01T24:00:00Z",
                     "2024-05-01T12:00:00+24:00", "1714564800", "yesterday"]),
    st.integers(0, 2_000_000_000),
)
objects = st.one_of(st.none(), st.just({}), st.dictionaries(st.text(max_size=4), st.integers() | st.text(max_size=4),
                                                             max_size=3), st.just("not an object"), st.just([1]))
contexts = st.one_of(objects, st.fixed_dictionaries({"groupId": st.one_of(st.text(max_size=4), st.integers(),
                                                                           st.booleans(), st.none())}))
records = st.fixed_dictionaries(
    {"type": st.sampled_from(["track", "identify", "group", "alias", "page", "screen", "purchase", 5])},
    optional={
        "messageId": ids, "userId": ids, "anonymousId": ids, "groupId": ids, "previousId": ids,
        "event": st.one_of(st.none(), st.sampled_from(["Report Run", "", "  ", 7])), "name": ids,
        "timestamp": timestamps, "sentAt": timestamps, "originalTimestamp": timestamps,
        "receivedAt": timestamps, "properties": objects, "traits": objects, "context": contexts,
        "writeKey": st.text(max_size=4),
    },
)


def checked(record: dict, context: RowContext):
    try:
        return _checked_row(record, context)
    except InvalidEventError:
        return "invalid"


@settings(max_examples=3000, deadline=None)
@given(record=records, batch_sent=st.one_of(st.none(), st.just(datetime(2024, 5, 1, 12, 0, 30))), live=st.booleans())
def test_fast_row_equals_model_row(record, batch_sent, live):
    context = RowContext(RECEIVED_AT, "test", timedelta(hours=1), live=live, sent_at=batch_sent if live else None)
    fast = _fast_row(record, context)
    if fast is not None:
        assert fast == checked(record, context)


def test_fast_row_takes_common_message():
    record = {"type": "track", "event": "Report Run", "userId": "ann", "messageId": "m-1",
              "timestamp": "2024-05-01T11:59:00.000Z", "sentAt": "2024-05-01T12:00:00.000Z",
              "properties": {"rows": 3}, "context": {"groupId": 42}}
    context = RowContext(RECEIVED_AT, "test", timedelta(hours=1), live=True)
    row = _fast_row(record, context)
    assert row is not None
    assert row == checked(record, context)
    assert row[6] == "42"
    assert row[8] == RECEIVED_AT - timedelta(minutes=1)


@pytest.mark.parametrize("sent_at", [None, "2024-05-01T14:00:00Z", "2024-05-01T10:00:00+02:00"])
@pytest.mark.parametrize("timestamp", ["2024-05-01T13:00:00Z", "2024-05-01T13:00:00.000001Z", "2024-05-01T13:00:30Z",
                                       "2024-05-01T14:30:00+01:30", "2024-05-01T11:00:00-01:00", "0001-01-01T00:00:00Z"])
def test_fast_row_matches_model_at_clamp_edges(timestamp, sent_at):
    record = {"type": "page", "userId": "ann", "messageId": "m-2", "timestamp": timestamp}
    if sent_at:
        record["sentAt"] = sent_at
    context = RowContext(RECEIVED_AT, "test", timedelta(hours=1), live=True)
    fast = _fast_row(record, context)
    if fast is not None:
        assert fast == checked(record, context)


@pytest.mark.parametrize("live", [False, True])
def test_fast_row_corrects_skew_only_live(live):
    record = {"type": "track", "event": "Report Run", "userId": "s1", "messageId": "s1",
              "timestamp": "2024-02-28T10:00:00Z", "sentAt": "2024-02-28T10:00:05Z"}
    context = RowContext(RECEIVED_AT, "test", timedelta(hours=1), live=live)

    row = _fast_row(record, context)

    assert row is not None
    assert row == checked(record, context)
    assert row[8] == (RECEIVED_AT - timedelta(seconds=5) if live else datetime(2024, 2, 28, 10, 0))
