"""The lake layout of events: Parquet files partitioned by the events' UTC date.

``export_events`` writes the store's events in this layout, and the Spark
engine reads it (or any Parquet files or table with the same columns). A
folder looks like ``DIR/date=2024-03-01/data_0.parquet``; each file contains the
events table's columns, with ``timestamp`` as a naive UTC timestamp and
``properties``, ``traits`` and ``context`` as JSON text.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from upsignal.store import Store

log = logging.getLogger(__name__)

PARTITION_COLUMN = "date"

# Columns the engines read: JSON and text columns are strings, timestamp a timestamp.
TEXT_COLUMNS = (
    "type", "event", "name", "user_id", "anonymous_id", "group_id", "previous_id",
    "properties", "traits", "context",
)
TIMESTAMP_COLUMN = "timestamp"

# The store's events columns in table order; JSON columns leave as text.
_EXPORT_COLUMNS = """
message_id, type, event, name, user_id, anonymous_id, group_id, previous_id,
timestamp, received_at,
CAST(properties AS VARCHAR) AS properties,
CAST(traits AS VARCHAR) AS traits,
CAST(context AS VARCHAR) AS context,
source, timestamp_clamped,
CAST(timestamp AS DATE) AS date
"""


@dataclass
class ExportResult:
    directory: str
    events: int
    partitions: int
    seconds: float


def is_path(source: str) -> bool:
    """Whether an events source names Parquet files rather than a Spark table.

    A source is a path when it exists locally or contains a slash, a URI
    scheme or a glob character. Anything else is a table name such as
    ``analytics.events``.

    >>> is_path("s3a://lake/events/date=2024-*")
    True
    >>> is_path("analytics.events")
    False
    """
    return Path(source).exists() or any(mark in source for mark in ("/", "\\", "*", "?", "[", "://"))


def export_events(store: Store, directory: str | Path, overwrite: bool = False) -> ExportResult:
    """Write all of the store's events as Parquet, one folder per UTC date; return counts.

    Raises FileExistsError when the folder has files and ``overwrite`` is false;
    with ``overwrite`` the folder's contents are deleted first.
    """
    started = time.perf_counter()
    target = Path(directory)
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise FileExistsError(f"{target} is not empty")
    target.mkdir(parents=True, exist_ok=True)
    path = str(target).replace("'", "''")
    options = f"FORMAT parquet, PARTITION_BY ({PARTITION_COLUMN})" + (", OVERWRITE true" if overwrite else "")
    store.conn.execute(f"COPY (SELECT {_EXPORT_COLUMNS} FROM events ORDER BY timestamp) TO '{path}' ({options})")
    events, partitions = store.conn.execute(
        "SELECT count(*), count(DISTINCT CAST(timestamp AS DATE)) FROM events"
    ).fetchall()[0]
    result = ExportResult(str(target), events, partitions, time.perf_counter() - started)
    log.info("exported %d events in %d date partitions to %s in %.2f s", events, partitions, target, result.seconds)
    return result
