"""Window bounds for an as-of time.

A rolling window of length L is ``(as_of - L, as_of]``: an event exactly L
before the as-of time falls in the previous window, so consecutive windows
partition time. A calendar week is ``[start of the week containing as_of,
as_of]`` in the model's time zone, starting on its ``week_start`` day. Its
previous window is the same stretch of the week before (from that week's start
to the same time after it), so a Monday morning is compared with last Monday
morning rather than with a whole week. Bounds are naive UTC datetimes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from upsignal.signals.model import WEEKDAYS, parse_window


@dataclass(frozen=True)
class Bounds:
    lower: datetime
    lower_inclusive: bool
    upper: datetime
    upper_inclusive: bool

    def contains(self, moment: datetime) -> bool:
        above = moment >= self.lower if self.lower_inclusive else moment > self.lower
        below = moment <= self.upper if self.upper_inclusive else moment < self.upper
        return above and below


def week_start(as_of: datetime, timezone: str, first_weekday: str) -> datetime:
    """Return the UTC start of the calendar week that contains ``as_of`` (naive UTC)."""
    zone = ZoneInfo(timezone)
    local = as_of.replace(tzinfo=UTC).astimezone(zone)
    days_back = (local.weekday() - WEEKDAYS.index(first_weekday)) % 7
    start_date = local.date() - timedelta(days=days_back)
    local_start = datetime(start_date.year, start_date.month, start_date.day, tzinfo=zone)
    return local_start.astimezone(UTC).replace(tzinfo=None)


def window_bounds(window: str, as_of: datetime, timezone: str, first_weekday: str) -> tuple[Bounds, Bounds]:
    """Return the (current, previous) bounds of a window as of a time."""
    length = parse_window(window)
    if length is None:
        start = week_start(as_of, timezone, first_weekday)
        previous_start = week_start(start - timedelta(microseconds=1), timezone, first_weekday)
        previous_end = min(previous_start + (as_of - start), start - timedelta(microseconds=1))
        return Bounds(start, True, as_of, True), Bounds(previous_start, True, previous_end, True)
    return (
        Bounds(as_of - length, False, as_of, True),
        Bounds(as_of - 2 * length, False, as_of - length, True),
    )


def describe_window(window: str, previous: bool = False) -> str:
    """Return a window's phrase for sentences: 'in the last 7 days', 'this week', 'by this point last week'.

    >>> describe_window("7d")
    'in the last 7 days'
    >>> describe_window("7d", previous=True)
    'the 7 days before'
    >>> describe_window("week", previous=True)
    'by this point last week'
    """
    if window == "week":
        return "by this point last week" if previous else "this week"
    amount, unit = int(window[:-1]), {"h": "hour", "d": "day", "w": "week"}[window[-1]]
    if amount == 1:
        return f"the {unit} before" if previous else f"in the last {unit}"
    return f"the {amount} {unit}s before" if previous else f"in the last {amount} {unit}s"
