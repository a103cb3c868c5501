"""The Spark engine's sources, settings and outputs: the CLI, Parquet globs, tables, Parquet output."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tests.conftest import add_events
from tests.spark_fixtures import TEST_CONF, spark  # noqa: F401  (the session-wide SparkSession)
from tests.test_engines_parity import AS_OF, EVENTS, MODEL_YAML
from upsignal.cli import run_app
from upsignal.errors import ConfigError
from upsignal.identity import resolve_accounts
from upsignal.signals.engines import DuckDBEngine
from upsignal.signals.engines.lake import export_events
from upsignal.signals.engines.spark import SparkEngine
from upsignal.signals.model import parse_model
from upsignal.store import Store

pytestmark = pytest.mark.slow

AS_OF_TEXT = AS_OF.isoformat() + "Z"
SHUFFLE_KEY = "spark.sql.shuffle.partitions"


@pytest.fixture(scope="module")
def model():
    return parse_model(MODEL_YAML)


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    """The parity events exported to date-partitioned Parquet."""
    folder = tmp_path_factory.mktemp("lake") / "events"
    with Store(":memory:") as store:
        add_events(store, *EVENTS)
        export_events(store, folder)
    return folder


@pytest.fixture(scope="module")
def duckdb_scores(model) -> dict[str, dict]:
    """Scores of the parity events computed by the DuckDB engine, by account."""
    with Store(":memory:") as store:
        add_events(store, *EVENTS)
        resolve_accounts(store)
        with DuckDBEngine().scores(model, AS_OF) as relation:
            return {row["account_id"]: row for row in store.rows(f"SELECT * FROM {relation}")}


def spark_scores(spark, source: str, model) -> dict[str, dict]:  # noqa: F811
    with Store(":memory:") as store:
        engine = SparkEngine(spark, source, store)
        try:
            with engine.scores(model, AS_OF) as relation:
                return {row["account_id"]: row for row in store.rows(f"SELECT * FROM {relation}")}
        finally:
            engine.release()


def stored_scores(db: Path) -> dict[str, dict]:
    with Store(db, read_only=True) as store:
        rows = store.rows(
            "SELECT s.account_id, s.score, s.tier, s.signals, s.points FROM account_scores AS s"
            " JOIN score_runs AS r USING (run_id) WHERE r.as_of = ?",
            [AS_OF],
        )
    return {row["account_id"]: row for row in rows}


# -- the score command ---------------------------------------------------------------


def test_score_command_matches_duckdb(spark, lake, tmp_path, monkeypatch):  # noqa: F811
    model_file = tmp_path / "model.yaml"
    model_file.write_text(MODEL_YAML)
    duckdb_db, spark_db = tmp_path / "duckdb.duckdb", tmp_path / "spark.duckdb"
    with Store(duckdb_db) as store:
        add_events(store, *EVENTS)
        resolve_accounts(store)
    project = tmp_path / "upsignal.yaml"
    project.write_text(yaml.safe_dump({"spark": {"master": "local[2]", "events": str(lake), "conf": {SHUFFLE_KEY: 3}}}))
    monkeypatch.setenv("UPSIGNAL_PROJECT", str(project))

    common = ["score", "--model", str(model_file), "--as-of", AS_OF_TEXT]
    assert run_app([*common, "--db", str(duckdb_db)]) == 0
    try:
        assert run_app([*common, "--db", str(spark_db), "--engine", "spark", "--spark-conf", f"{SHUFFLE_KEY}=5"]) == 0
        assert spark.conf.get(SHUFFLE_KEY) == "5"
    finally:
        spark.conf.set(SHUFFLE_KEY, TEST_CONF[SHUFFLE_KEY])

    expected, found = stored_scores(duckdb_db), stored_scores(spark_db)
    assert sorted(found) == sorted(expected)
    for account, row in expected.items():
        assert found[account]["score"] == row["score"], account
        assert found[account]["tier"] == row["tier"], account
        assert json.loads(found[account]["signals"]) == json.loads(row["signals"]), account
        assert json.loads(found[account]["points"]) == json.loads(row["points"]), account
    with Store(spark_db, read_only=True) as store:
        assert store.scalar("SELECT engine FROM score_runs") == "spark"
        assert store.scalar("SELECT account_id FROM users WHERE user_id = 'c'") == "ws-1"


def test_score_command_writes_parquet(spark, lake, tmp_path, model, duckdb_scores):  # noqa: F811
    model_file = tmp_path / "model.yaml"
    model_file.write_text(MODEL_YAML)
    output = tmp_path / "warehouse"
    command = ["score", "--engine", "spark", "--events", str(lake), "--model", str(model_file),
               "--as-of", AS_OF_TEXT, "--parquet", str(output)]

    assert run_app(command) == 0
    relation = duckdb.sql(f"SELECT * FROM read_parquet('{output}/scores/*.parquet')")
    scores = {}
    for values in relation.fetchall():
        row = dict(zip(relation.columns, values))
        scores[row["account_id"]] = row
    assert sorted(scores) == sorted(duckdb_scores)
    for account, expected in duckdb_scores.items():
        assert scores[account]["as_of"] == AS_OF
        assert scores[account]["model_version"] == model.version
        assert scores[account]["score"] == expected["score"], account
    accounts = duckdb.sql(f"SELECT count(*) FROM read_parquet('{output}/accounts/*.parquet')").fetchall()[0][0]
    assert accounts == len(duckdb_scores)
    assert (output / "users").is_dir()

    assert run_app(command) == 1  # the folders exist now


# -- event sources ---------------------------------------------------------------------


def test_glob_source_matches_folder(spark, lake, model, duckdb_scores):  # noqa: F811
    assert spark_scores(spark, f"{lake}/date=*/*.parquet", model) == duckdb_scores


def test_table_source_matches_folder(spark, lake, model, duckdb_scores):  # noqa: F811
    spark.read.parquet(str(lake)).write.saveAsTable("lake_events")
    try:
        assert spark_scores(spark, "lake_events", model) == duckdb_scores
    finally:
        spark.sql("DROP TABLE lake_events")


def test_unpartitioned_utc_timestamps_match(spark, lake, model, duckdb_scores, tmp_path):  # noqa: F811
    """One flat file whose timestamps are UTC-adjusted (Spark's TIMESTAMP), so no date pruning applies."""
    table = pq.read_table(lake, partitioning="hive").drop_columns(["date"])
    position = table.schema.get_field_index("timestamp")
    utc = table.column("timestamp").cast(pa.timestamp("us", tz="UTC"))
    flat = tmp_path / "events.parquet"
    pq.write_table(table.set_column(position, "timestamp", utc), flat)

    assert spark.read.parquet(str(flat)).schema["timestamp"].dataType.typeName() == "timestamp"
    assert spark_scores(spark, str(flat), model) == duckdb_scores


def test_missing_columns_named(spark, tmp_path):  # noqa: F811
    path = tmp_path / "thin.parquet"
    pq.write_table(pa.table({"type": ["track"], "user_id": ["u1"], "properties": [1]}), path)

    with pytest.raises(ConfigError) as raised:
        SparkEngine(spark, str(path))
    message = str(raised.value)
    assert "timestamp (missing)" in message
    assert "traits (missing)" in message
    assert "properties (long, not string)" in message
    assert "upsignal export events" in message


def test_missing_path_rejected(spark, tmp_path):  # noqa: F811
    with pytest.raises(ConfigError, match="cannot read events Parquet files"):
        SparkEngine(spark, str(tmp_path / "nowhere" / "*.parquet"))


def test_missing_table_rejected(spark):  # noqa: F811
    with pytest.raises(ConfigError, match="cannot read events table 'no_such_events'"):
        SparkEngine(spark, "no_such_events")
