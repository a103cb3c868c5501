"""One local SparkSession for all Spark tests, because Spark takes seconds to start.

Test modules import the ``spark`` fixture from here. The session is joined,
not started again, by every later ``start_session`` call in the same process,
including the CLI's.
"""

from __future__ import annotations

import pytest

from upsignal.config import SparkSettings
from upsignal.signals.engines.spark_session import start_session

# Two shuffle partitions suit the tiny test data on local[2], where Spark's default
# of 200 would run 200 tasks per shuffle.
TEST_CONF = {
    "spark.sql.shuffle.partitions": "2",
    "spark.default.parallelism": "2",
}


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    session = start_session(
        SparkSettings(master="local[2]"), {**TEST_CONF, "spark.sql.warehouse.dir": str(warehouse)}
    )
    yield session
    session.stop()
