"""Turn source cells (CSV text, Parquet values, foreign JSON) into JSON values for a Segment message.

Parquet cells arrive as Python objects that JSON has no type for: ``Decimal``
from ``decimal128``, ``datetime`` or pandas ``Timestamp`` from ``timestamp``
columns, ``date`` from ``date32``. ``json_value`` converts them, and
``typed_value`` applies a mapping's ``type``. Both raise ``ValueError`` or
``TypeError`` for a value they cannot convert; the mapping turns that into a
rejection of the row that names the column.
"""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any

import orjson

# orjson, which writes the stored JSON, rejects integers outside this range.
_MIN_JSON_INT = -(2**63)
_MAX_JSON_INT = 2**64 - 1
_TRUE = {"true", "t", "yes", "y", "1"}
_FALSE = {"false", "f", "no", "n", "0"}


def json_value(value: Any) -> Any:
    """Convert a cell to a JSON-serialisable value, recursing into lists and objects.

    Decimal becomes int when integral and within orjson's 64-bit range, else float.
    Datetimes become ISO 8601 text in UTC, naive ones taken as UTC; dates and
    times become ISO text; bytes are decoded as UTF-8.
    """
    if value is None or isinstance(value, (str, bool)):
        return value
    if isinstance(value, int):
        return value if _MIN_JSON_INT <= value <= _MAX_JSON_INT else float(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value} has no JSON representation")
        return value
    if isinstance(value, Decimal):
        return _decimal_number(value)
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, dict):
        return {str(key): json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(item) for item in value]
    raise TypeError(f"a {type(value).__name__} value has no JSON representation")


def iso_utc(moment: datetime) -> str:
    """Format a datetime as ISO 8601 in UTC with a ``Z``; a naive one is taken as UTC.

    A pandas ``Timestamp`` loses digits below the microsecond, which the store does not keep.
    """
    if hasattr(moment, "to_pydatetime"):
        moment = moment.to_pydatetime(warn=False)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.isoformat() + "Z"


def _decimal_number(value: Decimal) -> int | float:
    if not value.is_finite():
        raise ValueError(f"{value} has no JSON representation")
    if value == value.to_integral_value() and _MIN_JSON_INT <= value <= _MAX_JSON_INT:
        return int(value)
    return float(value)


def typed_value(value: Any, value_type: str) -> Any:
    """Convert a non-empty cell to a mapping ``type``: string, number, integer, boolean or json."""
    return _CONVERTERS[value_type](value)


def _to_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Decimal)):
        return str(value)
    converted = json_value(value)
    return converted if isinstance(converted, str) else orjson.dumps(converted).decode()


def _to_number(value: Any) -> int | float:
    if isinstance(value, bool):
        raise TypeError("a boolean is not a number")
    if isinstance(value, int):
        return json_value(value)
    if isinstance(value, Decimal):
        return _decimal_number(value)
    number = float(value.strip()) if isinstance(value, str) else float(value)
    if not math.isfinite(number):
        raise ValueError(f"{number} is not a finite number")
    return number


def _to_integer(value: Any) -> int:
    """Accept 3, 3.0, "3" and "3.0"; reject 3.7 rather than truncate it."""
    if isinstance(value, bool):
        raise TypeError("a boolean is not an integer")
    if isinstance(value, int):
        integer = value
    elif isinstance(value, str):
        text = value.strip()
        try:
            integer = int(text)
        except ValueError:
            integer = _integral(Decimal(text))
    else:
        integer = _integral(Decimal(value))
    if not _MIN_JSON_INT <= integer <= _MAX_JSON_INT:
        raise ValueError(f"{integer} is outside the 64-bit integer range")
    return integer


def _integral(number: Decimal) -> int:
    if not number.is_finite() or number != number.to_integral_value():
        raise ValueError(f"{number} is not a whole number")
    return int(number)


def _to_boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float, Decimal)) and value in (0, 1):
        return value == 1
    text = value.strip().lower() if isinstance(value, str) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"{value!r} is not a boolean")


def _to_json(value: Any) -> Any:
    """Parse a JSON text cell; a Parquet list or struct is already parsed."""
    if isinstance(value, (str, bytes)):
        return orjson.loads(value)
    return json_value(value)


_CONVERTERS = {
    "string": _to_string,
    "number": _to_number,
    "integer": _to_integer,
    "boolean": _to_boolean,
    "json": _to_json,
}
