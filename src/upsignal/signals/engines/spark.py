"""The Spark engine: identity resolution and scoring run in Spark, next to the events.

Events come from Parquet files (a folder or a glob, in the layout of
``engines.lake``) or a Spark table. Resolution runs the same statements as
DuckDB (``identity.resolve``, transpiled by SQLGlot), and scoring runs the same
compiled query. No per-event row reaches the driver. Only the identity tables
(one row per user or user key) and one row per account come back, as Arrow,
into the store, and ``write_parquet`` keeps even those in the lake.

The engine registers temporary views named ``events``, ``accounts``,
``user_keys`` and the resolution steps' names in its session, so one session
runs one engine at a time.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa
import sqlglot

from upsignal.errors import ConfigError
from upsignal.identity.resolve import SQL_FUNCTIONS, replace_identity, run_resolution
from upsignal.signals.compiler import compile_scoring_query, literal
from upsignal.signals.engines.lake import PARTITION_COLUMN, TEXT_COLUMNS, TIMESTAMP_COLUMN, is_path
from upsignal.signals.model import AGGREGATE_TYPES, ScoringModel
from upsignal.signals.windows import window_bounds
from upsignal.store import Store

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger(__name__)

_relation_ids = itertools.count(1)


def scan_start(model: ScoringModel, as_of: datetime) -> datetime:
    """Return the earliest time any of the model's windows reaches back to as of ``as_of``."""
    earliest = as_of
    for name, signal in model.signals.items():
        if not isinstance(signal, AGGREGATE_TYPES):
            continue
        current, previous = window_bounds(signal.window, as_of, model.timezone, model.week_start)
        earliest = min(earliest, current.lower)
        if model.needs_previous(name):
            earliest = min(earliest, previous.lower)
    return earliest


def read_events(session: SparkSession, source: str) -> DataFrame:
    """Open events from Parquet files or a table, checking the columns the engine reads."""
    from pyspark.errors import AnalysisException

    try:
        frame = session.read.parquet(source) if is_path(source) else session.table(source)
    except AnalysisException as error:
        kind = "Parquet files" if is_path(source) else "table"
        raise ConfigError(f"cannot read events {kind} {source!r}: {error.getMessage()}") from None
    check_event_columns(frame, source)
    return frame


def check_event_columns(frame: DataFrame, source: str) -> None:
    """Raise ConfigError naming every missing or mistyped column the engine reads."""
    types = {field.name: field.dataType.typeName() for field in frame.schema.fields}
    problems = [f"{column} (missing)" for column in (*TEXT_COLUMNS, TIMESTAMP_COLUMN) if column not in types]
    problems += [
        f"{column} ({types[column]}, not string)"
        for column in TEXT_COLUMNS
        if column in types and types[column] != "string"
    ]
    if TIMESTAMP_COLUMN in types and types[TIMESTAMP_COLUMN] not in ("timestamp", "timestamp_ntz"):
        problems.append(f"{TIMESTAMP_COLUMN} ({types[TIMESTAMP_COLUMN]}, not timestamp)")
    if problems:
        raise ConfigError(
            f"events {source!r} do not have upsignal's event columns: {', '.join(problems)};"
            " 'upsignal export events --parquet DIR' writes the expected layout"
        )


def register_functions(session: SparkSession) -> None:
    """Register the Python SQL functions that resolution calls as Arrow UDFs."""
    try:
        from pyspark.sql.functions import arrow_udf
    except ImportError:
        import pyspark

        raise ConfigError(
            f"the Spark engine needs pyspark 4.1 or newer for Arrow UDFs, but found {pyspark.__version__}"
        ) from None
    for name, function in SQL_FUNCTIONS.items():
        session.udf.register(name, arrow_udf(function, "string"))


class SparkRunner:
    """Runs resolution statements in Spark, keeping each result as a checkpointed temp view.

    A local checkpoint computes the step once and cuts its lineage, so later
    steps read its rows. With ``persist()`` instead, Spark 4.3 did not reuse a
    step whose SQL has a WITH clause, and every step recomputed those before it.
    """

    dialect = "spark"

    def __init__(self, session: SparkSession):
        self.session = session
        self.frames: dict[str, DataFrame] = {}

    def materialize(self, name: str, sql: str) -> None:
        from pyspark import StorageLevel

        # NOTE: local checkpoints live in executor storage, so losing an executor
        # while resolution runs fails the job instead of recomputing the step.
        frame = self.session.sql(sql).localCheckpoint(eager=True, storageLevel=StorageLevel.MEMORY_AND_DISK)
        frame.createOrReplaceTempView(name)
        self.frames[name] = frame

    def release(self) -> None:
        """Drop the steps' views; Spark frees their blocks once nothing refers to them."""
        for name in self.frames:
            self.session.catalog.dropTempView(name)
        self.frames.clear()


class SparkEngine:
    """Scores accounts in Spark; see ``upsignal.signals.engines`` for the contract.

    ``store`` receives the identity tables and is where ``scores`` registers
    its result; it may be None when results go to Parquet only.
    """

    name = "spark"

    def __init__(self, session: SparkSession, events: str, store: Store | None = None):
        self.session = session
        self.source = events
        self.store = store
        self.events = read_events(session, events)
        self._runner: SparkRunner | None = None
        register_functions(session)

    # -- identity ---------------------------------------------------------------

    def resolve_accounts(self) -> dict[str, int]:
        """Resolve users into accounts in Spark and, with a store, replace its identity tables.

        Returns the counts of users and accounts.
        """
        started = time.perf_counter()
        self.release()
        self.events.createOrReplaceTempView("events")
        runner = SparkRunner(self.session)
        run_resolution(runner)
        self._runner = runner
        runner.frames["resolved_accounts"].createOrReplaceTempView("accounts")
        runner.frames["resolved_user_keys"].createOrReplaceTempView("user_keys")
        if self.store is None:
            counts = {
                "users": runner.frames["resolved_users"].count(),
                "accounts": runner.frames["resolved_accounts"].count(),
            }
        else:
            counts = self._store_identity(self.store, runner)
        log.info(
            "resolved %d users into %d accounts in Spark in %.2f s",
            counts["users"], counts["accounts"], time.perf_counter() - started,
        )
        return counts

    def _store_identity(self, store: Store, runner: SparkRunner) -> dict[str, int]:
        names = {"resolved_users": "", "resolved_accounts": "", "resolved_user_keys": ""}
        with contextlib.ExitStack() as registered:
            for step in names:
                names[step] = registered.enter_context(_registered(store, runner.frames[step].toArrow()))
            with store.transaction():
                return replace_identity(
                    store, names["resolved_users"], names["resolved_accounts"], names["resolved_user_keys"]
                )

    # -- queries ------------------------------------------------------------------

    def query(self, sql: str) -> DataFrame:
        """Run DuckDB-dialect SQL over the engine's views, transpiled for Spark (lazily)."""
        return self.session.sql(sqlglot.transpile(sql, read="duckdb", write="spark")[0])

    def _scoring_frame(self, model: ScoringModel, as_of: datetime) -> DataFrame:
        if self._runner is None:
            self.resolve_accounts()
        self._events_since(scan_start(model, as_of), as_of).createOrReplaceTempView("events")
        return self.query(compile_scoring_query(model, as_of))

    def _events_since(self, start: datetime, end: datetime) -> DataFrame:
        """Events, with date partitions outside [start, end] pruned when the source has them.

        A day's margin on each side keeps every event even when a lake's
        partition dates are local rather than UTC dates.
        """
        from pyspark.sql.functions import col, lit

        if PARTITION_COLUMN not in self.events.columns:
            return self.events
        if self.events.schema[PARTITION_COLUMN].dataType.typeName() != "date":
            return self.events
        first, last = start.date() - timedelta(days=1), end.date() + timedelta(days=1)
        return self.events.where(col(PARTITION_COLUMN).between(lit(first), lit(last)))

    @contextlib.contextmanager
    def scores(self, model: ScoringModel, as_of: datetime) -> Iterator[str]:
        """Compute every account's scores in Spark and yield them as a query on the store."""
        if self.store is None:
            raise ConfigError("the Spark engine was opened without a store, so it can only write Parquet")
        started = time.perf_counter()
        table = self._scoring_frame(model, as_of).toArrow()
        log.info("computed %d account scores in Spark in %.2f s", table.num_rows, time.perf_counter() - started)
        with _registered(self.store, table) as name:
            yield f"(SELECT * FROM {name})"

    def write_parquet(self, model: ScoringModel, as_of: datetime, directory: str) -> None:
        """Write scores, accounts and users to ``directory``/{scores,accounts,users} from Spark.

        The scores carry ``as_of`` and ``model_version`` columns; tiers need the
        store's account state (for hysteresis), so they are not computed here.
        Raises ConfigError if any of the three folders already exists.
        """
        from pyspark.errors import AnalysisException

        scores = self._scoring_frame(model, as_of)
        scores.createOrReplaceTempView("scores")
        stamped = self.query(
            f"SELECT {literal(as_of)} AS as_of, {literal(model.version)} AS model_version, * FROM scores"
        )
        outputs = {
            "scores": stamped,
            "accounts": self._runner.frames["resolved_accounts"],
            "users": self._runner.frames["resolved_users"],
        }
        for folder, frame in outputs.items():
            target = f"{directory.rstrip('/')}/{folder}"
            try:
                frame.write.parquet(target)
            except AnalysisException as error:
                raise ConfigError(f"cannot write {target}: {error.getMessage()}") from None

    def release(self) -> None:
        """Drop the checkpointed identity results; the next scoring resolves again."""
        if self._runner is not None:
            self._runner.release()
            self._runner = None


@contextlib.contextmanager
def _registered(store: Store, table: pa.Table) -> Iterator[str]:
    name = f"spark_result_{next(_relation_ids)}"
    # DuckDB 2 rejects register() while an earlier execute() still has rows
    # pending (a fetchone() leaves them), so those results are run to their end.
    store.conn.complete()
    store.conn.register(name, table)
    try:
        yield name
    finally:
        store.conn.complete()
        store.conn.unregister(name)
