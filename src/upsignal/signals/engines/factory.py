"""Open the engine that a command names, with its settings from the project file and options."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from upsignal.config import load_project
from upsignal.errors import ConfigError
from upsignal.signals.engines.duckdb import DuckDBEngine
from upsignal.store import Store

if TYPE_CHECKING:
    from upsignal.signals.engines.spark import SparkEngine

ENGINE_NAMES = ("duckdb", "spark")


@contextlib.contextmanager
def open_spark_engine(
    store: Store | None, events: str | None = None, spark_conf: list[str] | None = None
) -> Iterator[SparkEngine]:
    """Start Spark, open the events and resolve accounts there, then yield the engine.

    The master URL, settings and default events come from the project file's
    ``spark`` section; ``events`` and ``spark_conf`` (``key=value`` strings)
    override them. With a store, resolution replaces its identity tables.
    """
    from upsignal.signals.engines.spark import SparkEngine
    from upsignal.signals.engines.spark_session import parse_spark_conf, start_session

    settings = load_project().spark
    source = events or settings.events
    if not source:
        raise ConfigError(
            "the Spark engine needs events: pass --events with a Parquet folder, glob or table name,"
            " or set spark.events in upsignal.yaml"
        )
    overrides = parse_spark_conf(spark_conf or [])
    engine = SparkEngine(start_session(settings, overrides), source, store)
    try:
        engine.resolve_accounts()
        yield engine
    finally:
        engine.release()


@contextlib.contextmanager
def open_engine(
    name: str, store: Store, events: str | None = None, spark_conf: list[str] | None = None
) -> Iterator[DuckDBEngine | SparkEngine]:
    """Yield the named engine ready to score into ``store``; see ``open_spark_engine`` for Spark."""
    if name == "duckdb":
        if events or spark_conf:
            raise ConfigError("--events and --spark-conf need --engine spark; the duckdb engine reads the store")
        yield DuckDBEngine()
    elif name == "spark":
        with open_spark_engine(store, events, spark_conf) as engine:
            yield engine
    else:
        raise ConfigError(f"unknown engine {name!r}; use one of {', '.join(ENGINE_NAMES)}")
