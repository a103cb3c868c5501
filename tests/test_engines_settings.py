"""Spark engine settings: the project file, --spark-conf, and the checks made before Spark starts."""

from __future__ import annotations

import pytest
import yaml

from upsignal.cli import run_app
from upsignal.config import SparkSettings, load_project
from upsignal.errors import ConfigError
from upsignal.identity.resolve import merge_group_traits
from upsignal.signals.engines.spark_session import master_url, parse_spark_conf, session_conf


def test_conf_pairs_parsed():
    assert parse_spark_conf(["spark.executor.memory=8g", "spark.executor.memory=16g", "a.b = c=d"]) == {
        "spark.executor.memory": "16g",
        "a.b": "c=d",
    }


@pytest.mark.parametrize("pair", ["spark.executor.memory", "=8g", ""])
def test_conf_pair_without_key_rejected(pair):
    with pytest.raises(ConfigError, match="is not key=value"):
        parse_spark_conf([pair])


def test_options_override_project_file():
    settings = SparkSettings(conf={"spark.executor.memory": "4g", "spark.executor.cores": "2"})

    conf = session_conf(settings, {"spark.executor.memory": "8g"})

    assert conf["spark.executor.memory"] == "8g"
    assert conf["spark.executor.cores"] == "2"
    assert conf["spark.sql.session.timeZone"] == "UTC"


def test_local_master_binds_loopback():
    conf = session_conf(SparkSettings(master="local[4]"))

    assert conf["spark.driver.host"] == "127.0.0.1"
    assert conf["spark.driver.bindAddress"] == "127.0.0.1"
    assert conf["spark.ui.enabled"] == "false"


def test_cluster_master_keeps_network_defaults():
    conf = session_conf(SparkSettings(master="spark://spark-master:7077"))

    assert "spark.driver.host" not in conf
    assert "spark.ui.enabled" not in conf


def test_default_master_is_local(monkeypatch):
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)

    assert master_url(SparkSettings()) == "local[2]"
    assert session_conf(SparkSettings())["spark.driver.host"] == "127.0.0.1"


def test_spark_submit_master_kept(monkeypatch):
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "41234")

    assert master_url(SparkSettings()) is None
    assert "spark.driver.host" not in session_conf(SparkSettings())
    assert master_url(SparkSettings(master="yarn")) == "yarn"


@pytest.mark.parametrize("where", ["project", "option"])
def test_non_utc_session_time_zone_rejected(where):
    zone = {"spark.sql.session.timeZone": "Europe/Berlin"}
    settings = SparkSettings(conf=zone if where == "project" else {})

    with pytest.raises(ConfigError, match="needs UTC"):
        session_conf(settings, zone if where == "option" else None)


def test_project_file_conf_values_become_text(tmp_path):
    path = tmp_path / "upsignal.yaml"
    path.write_text(yaml.safe_dump({"spark": {
        "master": "local[8]",
        "events": "s3a://lake/events/",
        "conf": {"spark.sql.shuffle.partitions": 64, "spark.sql.adaptive.enabled": True},
    }}))

    spark = load_project(path).spark

    assert spark.master == "local[8]"
    assert spark.events == "s3a://lake/events/"
    assert spark.conf == {"spark.sql.shuffle.partitions": "64", "spark.sql.adaptive.enabled": "true"}


def test_project_file_empty_master_rejected(tmp_path):
    path = tmp_path / "upsignal.yaml"
    path.write_text(yaml.safe_dump({"spark": {"master": ""}}))

    with pytest.raises(ConfigError, match="spark.master"):
        load_project(path)


@pytest.mark.parametrize("settings, field", [
    ({"duckdb_threads": 100_000_000}, "server.duckdb_threads"),
    ({"duckdb_threads": True}, "server.duckdb_threads"),
    ({"ingest_backlog_mb": "64"}, "server.ingest_backlog_mb"),
    ({"ingest_backlog_mb": 0}, "server.ingest_backlog_mb"),
])
def test_server_setting_out_of_range_rejected(tmp_path, settings, field):
    """A huge thread count made DuckDB start threads until the system had none left."""
    path = tmp_path / "upsignal.yaml"
    path.write_text(yaml.safe_dump({"server": settings}))

    with pytest.raises(ConfigError, match=field):
        load_project(path)


# -- score command checks that fail before Spark starts --------------------------------


@pytest.fixture
def empty_project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("UPSIGNAL_PROJECT", raising=False)
    return tmp_path


def test_score_spark_without_events_fails(empty_project, capsys):
    code = run_app(["score", "--engine", "spark", "--db", str(empty_project / "s.duckdb")])

    assert code == 1
    assert "needs events" in capsys.readouterr().err


def test_score_spark_non_utc_option_fails(empty_project, capsys):
    code = run_app([
        "score", "--engine", "spark", "--events", str(empty_project), "--db", str(empty_project / "s.duckdb"),
        "--spark-conf", "spark.sql.session.timeZone=Asia/Kolkata",
    ])

    assert code == 1
    assert "needs UTC" in capsys.readouterr().err


def test_score_duckdb_with_events_fails(empty_project, capsys):
    code = run_app(["score", "--events", "lake/", "--db", str(empty_project / "s.duckdb")])

    assert code == 2
    assert "--engine spark" in capsys.readouterr().err


def test_score_parquet_needs_spark(empty_project, capsys):
    code = run_app(["score", "--parquet", str(empty_project / "out"), "--db", str(empty_project / "s.duckdb")])

    assert code == 2
    assert "--engine spark" in capsys.readouterr().err


# -- group traits, merged the same way by both engines ------------------------------------


def test_group_traits_tie_applies_in_text_order():
    calls = [
        {"called_at": 5, "traits": '{"plan": "team"}'},
        {"called_at": 5, "traits": '{"plan": "free"}'},
    ]

    assert merge_group_traits(calls) == '{"plan":"team"}'
    assert merge_group_traits(list(reversed(calls))) == '{"plan":"team"}'


def test_group_traits_invalid_json_skipped():
    calls = [{"called_at": 1, "traits": "{not json"}, {"called_at": 2, "traits": '{"seats": 3}'}]

    assert merge_group_traits(calls) == '{"seats":3}'


def test_group_traits_nested_value_replaced_whole():
    calls = [
        {"called_at": 1, "traits": '{"address": {"city": "Pune", "zip": "411001"}}'},
        {"called_at": 2, "traits": '{"address": {"city": "Mumbai"}}'},
    ]

    assert merge_group_traits(calls) == '{"address":{"city":"Mumbai"}}'
