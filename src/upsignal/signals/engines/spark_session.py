"""Start the SparkSession that the Spark engine runs in, from the project file's settings.

Settings are applied in this order, later ones winning: upsignal's defaults,
the project file's ``spark.conf``, then ``--spark-conf`` options. The session
time zone is always UTC, because events' timestamps are naive UTC values and
the compiled queries compare them with naive UTC literals.
"""

from __future__ import annotations

import os
import sys
import warnings
from typing import TYPE_CHECKING

from upsignal.config import SparkSettings
from upsignal.errors import ConfigError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SESSION_TIME_ZONE_KEY = "spark.sql.session.timeZone"

DEFAULT_CONF = {
    "spark.app.name": "upsignal",
    SESSION_TIME_ZONE_KEY: "UTC",
    # Spark's console progress bar would interleave with the CLI's own output.
    "spark.ui.showConsoleProgress": "false",
}

# Local mode binds only to the loopback interface and starts no web UI.
LOCAL_CONF = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.ui.enabled": "false",
}


def parse_spark_conf(pairs: list[str]) -> dict[str, str]:
    """Parse ``key=value`` options into a dict; later keys win.

    >>> parse_spark_conf(["spark.sql.shuffle.partitions=8", "spark.driver.memory=4g"])
    {'spark.sql.shuffle.partitions': '8', 'spark.driver.memory': '4g'}
    """
    conf = {}
    for pair in pairs:
        key, separator, value = pair.partition("=")
        if not separator or not key.strip():
            raise ConfigError(f"Spark setting {pair!r} is not key=value, e.g. spark.sql.shuffle.partitions=64")
        conf[key.strip()] = value.strip()
    return conf


DEFAULT_MASTER = "local[2]"


def master_url(settings: SparkSettings) -> str | None:
    """Return the master URL to set: the project file's, else local mode unless spark-submit started us.

    Under spark-submit (which starts the JVM first and passes its gateway port
    in PYSPARK_GATEWAY_PORT) the result is None, so its --master applies.
    """
    if settings.master:
        return settings.master
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        return None
    return DEFAULT_MASTER


def session_conf(settings: SparkSettings, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """Return the Spark settings for a session: defaults, then the project file, then overrides."""
    conf = dict(DEFAULT_CONF)
    if is_local(master_url(settings)):
        conf.update(LOCAL_CONF)
    conf.update(settings.conf)
    conf.update(overrides or {})
    if conf[SESSION_TIME_ZONE_KEY] != "UTC":
        raise ConfigError(
            f"{SESSION_TIME_ZONE_KEY} is {conf[SESSION_TIME_ZONE_KEY]!r}, but upsignal needs UTC:"
            " event timestamps are naive UTC; remove the setting"
        )
    return conf


def is_local(master: str | None) -> bool:
    return master is not None and (master == "local" or master.startswith("local["))


def start_session(settings: SparkSettings, overrides: dict[str, str] | None = None) -> SparkSession:
    """Start (or join) a SparkSession with the master URL and settings given.

    An existing session in this process, as on Databricks, is joined: its
    static settings stay as they are, and runtime SQL settings are applied.
    """
    conf = session_conf(settings, overrides)
    master = master_url(settings)
    try:
        from pyspark.sql import SparkSession
    except ImportError:
        raise ConfigError("the Spark engine needs pyspark; install it with: pip install 'upsignal[spark]'") from None

    builder = SparkSession.builder
    if master is not None:
        builder = builder.master(master)
    if is_local(master):
        # Python workers must import upsignal, so they run this interpreter, and
        # Spark must not look up the machine's network address.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    for key, value in conf.items():
        builder = builder.config(key, value)
    with warnings.catch_warnings():
        # pyspark 4.3 probes pandas when it starts and warns that pandas 3 is not
        # fully supported. The engine never converts through pandas (its UDFs and
        # results use Arrow), so that warning does not apply here.
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
        session = builder.getOrCreate()
    session.conf.set(SESSION_TIME_ZONE_KEY, "UTC")
    return session
