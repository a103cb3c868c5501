"""The embedded default engine: the query runs inside the store's own DuckDB connection."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime

from upsignal.signals.compiler import compile_scoring_query
from upsignal.signals.model import ScoringModel


class DuckDBEngine:
    name = "duckdb"

    @contextlib.contextmanager
    def scores(self, model: ScoringModel, as_of: datetime) -> Iterator[str]:
        yield f"({compile_scoring_query(model, as_of)})"
