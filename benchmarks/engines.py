"""Benchmark the DuckDB and Spark engines on the same events, and size a cluster for a billion.

Generates ``--events`` events over ``--accounts`` accounts straight into a
fresh DuckDB store (SQL, not the JSON importer, which score.py measures), then
in one run:

1. DuckDB: resolve accounts and compute every account's scores in the store;
2. exports the events to date-partitioned Parquet (``upsignal export events``);
3. Spark local mode: the same resolution and scoring on that Parquet.

Both engines collect the same per-account result as Arrow, and the script
checks that the two results are identical before it prints any timing. From
Spark's measured events per second per core, and the assumptions printed with
it, it projects the cores needed to score ``--target-events`` events within
``--target-seconds``, then records the figures in BENCHMARKS.md.

    .venv/bin/python benchmarks/engines.py                      # 10 M events, 100 k accounts
    .venv/bin/python benchmarks/engines.py --events 1000000 --accounts 10000 --no-record
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from report import machine_line, write_section  # noqa: E402

from upsignal.config import SparkSettings  # noqa: E402
from upsignal.identity import resolve_accounts  # noqa: E402
from upsignal.signals import load_model  # noqa: E402
from upsignal.signals.engines import DuckDBEngine  # noqa: E402
from upsignal.signals.engines.lake import export_events  # noqa: E402
from upsignal.signals.engines.spark import SparkEngine  # noqa: E402
from upsignal.signals.engines.spark_session import parse_spark_conf, start_session  # noqa: E402
from upsignal.store import Store  # noqa: E402

AS_OF = datetime(2024, 2, 26)
START = datetime(2024, 1, 1)
SPAN_SECONDS = 56 * 24 * 3600

# Accounts by how their users join: 40 % by group call, 50 % by company email
# domain, 10 % with free-mail users who each get a personal account.
USERS_SQL = """
CREATE OR REPLACE TEMP TABLE bench_users AS
SELECT CAST(row_number() OVER (ORDER BY account, member) - 1 AS UBIGINT) AS user_index, account, member,
       'u' || account || '-' || member AS user_id,
       'anon-' || account || '-' || member AS anonymous_id,
       CASE WHEN account % 10 < 4 THEN 'group' WHEN account % 10 < 9 THEN 'domain' ELSE 'personal' END AS kind,
       TIMESTAMP '{start}' + to_seconds(CAST(hash(account, member) % ({span} // 8) AS BIGINT)) AS joined_at
FROM (SELECT account, unnest(range(CAST(1 + hash(account) % 5 AS BIGINT))) AS member FROM range({accounts}) AS t(account))
"""

EVENTS_SQL = """
INSERT INTO events
SELECT 'id-' || user_id, 'identify', NULL, NULL, user_id, anonymous_id, NULL, NULL, joined_at, joined_at, NULL,
       json_object('email', 'person' || member || '@' ||
                   CASE kind WHEN 'personal' THEN 'gmail.com' ELSE 'company' || account || '.test' END,
                   'name', 'Person ' || member),
       NULL, 'bench', false
FROM bench_users;

INSERT INTO events
SELECT 'gr-' || user_id, 'group', NULL, NULL, user_id, NULL, 'acct-' || account, NULL, joined_at, joined_at, NULL,
       json_object('name', 'Company ' || account, 'plan', CASE WHEN account % 3 = 0 THEN 'trial' ELSE 'free' END,
                   'employees', 2 + hash(account) % 199),
       NULL, 'bench', false
FROM bench_users WHERE kind = 'group';

INSERT INTO events
SELECT 'pv-' || user_id || '-' || visit, 'page', NULL, 'Pricing', NULL, anonymous_id, NULL, NULL,
       joined_at - to_seconds(3600 * (visit + 1)), joined_at, NULL, NULL, NULL, 'bench', false
FROM bench_users, range(2) AS v(visit);

INSERT INTO events
SELECT 'ev-' || i, 'track',
       CASE WHEN bucket < 40 THEN 'Report Run' WHEN bucket < 60 THEN 'Query Run'
            WHEN bucket < 65 THEN 'Project Created' WHEN bucket < 70 THEN 'Project Shared'
            WHEN bucket < 73 THEN 'Invite Sent' WHEN bucket < 75 THEN 'Account Added User'
            WHEN bucket < 76 THEN 'Signed Up' ELSE 'Dashboard Viewed' END,
       NULL, u.user_id, NULL, NULL, NULL, happened, happened,
       json_object('project_id', 'p' || u.account || '-' || (hash(i, 1) % 8), 'rows', hash(i, 2) % 10000),
       NULL, '{{"library":{{"name":"analytics-python","version":"2.3.0"}},"ip":"203.0.113.7"}}', 'bench', false
FROM (
  SELECT i, hash(i, 3) % 100 AS bucket, hash(i, 4) % {users} AS user_index,
         TIMESTAMP '{start}' + to_seconds(CAST(hash(i, 5) % {span} AS BIGINT)) AS happened
  FROM range({tracks}) AS t(i)
) AS e
JOIN bench_users AS u USING (user_index);
"""


@dataclass
class EngineTimes:
    resolve: float
    score: float

    @property
    def total(self) -> float:
        return self.resolve + self.score


def timed(action) -> tuple[float, object]:
    started = time.perf_counter()
    result = action()
    return time.perf_counter() - started, result


def generate(store: Store, events: int, accounts: int) -> int:
    """Fill the store's events table with exactly ``events`` events; return the user count."""
    conn = store.conn
    conn.execute(USERS_SQL.format(start=START.isoformat(sep=" "), span=SPAN_SECONDS, accounts=accounts))
    users, group_members = conn.execute(
        "SELECT count(*), count(*) FILTER (WHERE kind = 'group') FROM bench_users"
    ).fetchall()[0]
    # Each user identifies once and visits two pages anonymously first; group members send one group call.
    tracks = events - 3 * users - group_members
    if tracks <= 0:
        raise SystemExit(f"--events {events} is too few for {accounts} accounts ({users} users need profile events)")
    conn.execute(EVENTS_SQL.format(start=START.isoformat(sep=" "), span=SPAN_SECONDS, users=users, tracks=tracks))
    conn.execute("DROP TABLE bench_users")
    return users


def run_duckdb(store: Store, model) -> tuple[EngineTimes, pa.Table]:
    resolve_seconds, _ = timed(lambda: resolve_accounts(store))
    started = time.perf_counter()
    with DuckDBEngine().scores(model, AS_OF) as relation:
        table = store.conn.sql(f"SELECT * FROM {relation}").to_arrow_table()
    return EngineTimes(resolve_seconds, time.perf_counter() - started), table


def run_spark(lake: Path, conf: dict[str, str], master: str, model) -> tuple[EngineTimes, pa.Table, int]:
    """Resolve and score on Spark; return times, scores and the identity tables' Arrow bytes."""
    session = start_session(SparkSettings(master=master), conf)
    with Store(":memory:") as results:
        engine = SparkEngine(session, str(lake), results)
        resolve_seconds, _ = timed(engine.resolve_accounts)
        identity_bytes = sum(
            results.conn.sql(f"SELECT * FROM {table}").to_arrow_table().nbytes
            for table in ("users", "accounts", "user_keys")
        )
        started = time.perf_counter()
        with engine.scores(model, AS_OF) as relation:
            table = results.conn.sql(f"SELECT * FROM {relation}").to_arrow_table()
        score_seconds = time.perf_counter() - started
        engine.release()
    session.stop()
    return EngineTimes(resolve_seconds, score_seconds), table, identity_bytes


def check_identical(duckdb_table: pa.Table, spark_table: pa.Table) -> None:
    """Stop the benchmark unless both engines produced the same rows, value for value."""
    expected = sorted(duckdb_table.to_pylist(), key=lambda row: row["account_id"])
    found = sorted(spark_table.to_pylist(), key=lambda row: row["account_id"])
    if expected != found:
        different = sum(1 for left, right in zip(expected, found) if left != right)
        raise SystemExit(
            f"engines disagree: {len(expected):,} DuckDB rows, {len(found):,} Spark rows, {different:,} differ"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--master", default="local[*]", help="Spark master for the measured run")
    parser.add_argument("--spark-conf", action="append", default=["spark.driver.memory=6g"], metavar="KEY=VALUE")
    parser.add_argument("--target-events", type=float, default=1e9)
    parser.add_argument("--target-seconds", type=float, default=600)
    parser.add_argument("--efficiency", type=float, default=0.6,
                        help="assumed share of per-core local throughput a cluster keeps (network shuffle, stragglers)")
    parser.add_argument("--job-overhead", type=float, default=90,
                        help="assumed seconds of a cluster job spent outside the measured work (executors, planning)")
    parser.add_argument("--cores-per-executor", type=int, default=4)
    parser.add_argument("--workdir", type=Path, default=Path(__file__).resolve().parent / "work")
    parser.add_argument("--no-record", action="store_true", help="do not write BENCHMARKS.md")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    db_file, lake = args.workdir / "engines-bench.duckdb", args.workdir / "engines-lake"
    for stale in (db_file, db_file.with_suffix(".duckdb.wal")):
        stale.unlink(missing_ok=True)
    shutil.rmtree(lake, ignore_errors=True)
    model, _ = load_model()
    cores = os.cpu_count() or 1

    with Store(db_file) as store:
        print(f"generating {args.events:,} events over {args.accounts:,} accounts ...", flush=True)
        generate_seconds, users = timed(lambda: generate(store, args.events, args.accounts))
        events = store.scalar("SELECT count(*) FROM events")
        print(f"generated {events:,} events for {users:,} users in {generate_seconds:.1f} s", flush=True)

        duckdb_times, duckdb_table = run_duckdb(store, model)
        accounts = store.scalar("SELECT count(*) FROM accounts")
        print(f"duckdb: resolve {duckdb_times.resolve:.1f} s, score {duckdb_times.score:.1f} s,"
              f" {accounts:,} accounts", flush=True)
        export = export_events(store, lake)
        print(f"export: {export.events:,} events in {export.partitions} partitions in {export.seconds:.1f} s", flush=True)

    conf = parse_spark_conf(args.spark_conf)
    load_before = os.getloadavg()[0]
    spark_times, spark_table, identity_bytes = run_spark(lake, conf, args.master, model)
    load_after = os.getloadavg()[0]
    print(f"spark {args.master}: resolve {spark_times.resolve:.1f} s, score {spark_times.score:.1f} s", flush=True)
    check_identical(duckdb_table, spark_table)
    ratio = spark_times.total / duckdb_times.total
    print(f"identical results for {spark_table.num_rows:,} accounts; total {duckdb_times.total:.1f} s on DuckDB,"
          f" {spark_times.total:.1f} s on Spark, Spark / DuckDB = {ratio:.1f}x")

    per_core = events / (spark_times.total * cores)
    work_seconds = args.target_seconds - args.job_overhead
    needed_cores = math.ceil(args.target_events / (per_core * args.efficiency * work_seconds))
    executors = math.ceil(needed_cores / args.cores_per_executor)
    driver_gib = identity_bytes * (args.target_events / events) / 2**30
    print(f"projection: {per_core:,.0f} events/s per core measured; {args.target_events:,.0f} events in"
          f" {args.target_seconds:.0f} s need about {needed_cores} cores ({executors} executors of"
          f" {args.cores_per_executor} cores); identity tables about {driver_gib:.1f} GiB of Arrow on the driver")

    if args.no_record:
        return
    conf_text = " ".join(f"`{key}={value}`" for key, value in conf.items())
    write_section("Engines (benchmarks/engines.py)", f"""
{machine_line()} `python benchmarks/engines.py --events {args.events} --accounts {args.accounts}`,
Spark master `{args.master}` with {conf_text}; {_java_version()}. The 1-minute load average was
{load_before:.1f} before and {load_after:.1f} after the Spark run; above {cores}, other processes competed for the CPUs.

The same {events:,} generated events ({users:,} users, {accounts:,} accounts; 40 % of accounts join by
group call, 50 % by company email domain, 10 % are free-mail users with personal accounts) were resolved
and scored with the shipped default model as of {AS_OF:%Y-%m-%d}, once per engine, each run cold in a
fresh store or SparkSession. Both results held {spark_table.num_rows:,} rows and were identical value for value.

| step | DuckDB (store file) | Spark local ({cores} cores, Parquet) |
|---|---|---|
| account resolution, identity written to the store | {duckdb_times.resolve:.1f} s | {spark_times.resolve:.1f} s |
| signals and scores, per-account result as Arrow | {duckdb_times.score:.1f} s | {spark_times.score:.1f} s |
| total | {duckdb_times.total:.1f} s | {spark_times.total:.1f} s |
| events per second | {events / duckdb_times.total:,.0f} | {events / spark_times.total:,.0f} |

Spark / DuckDB time: **{ratio:.1f}x** on this machine. Exporting the store to Parquet took {export.seconds:.1f} s.

### Cluster size for {args.target_events:,.0f} events in {args.target_seconds / 60:.0f} minutes (an estimate)

Measured Spark throughput: {events:,} events / ({spark_times.total:.1f} s x {cores} cores) =
**{per_core:,.0f} events per second per core** for resolution plus scoring.

Assumptions, none of them measured here:
- the events have this benchmark's shape (about {events / users:.0f} events per user, 8 weeks of history, the default
  model's 28-day windows), so the work per event is the same;
- a cluster keeps {args.efficiency:.0%} of the per-core local-mode throughput, because shuffles cross the
  network and tasks straggle (local mode shuffles in memory);
- {args.job_overhead:.0f} s of the {args.target_seconds:.0f} s go to starting executors, planning and listing files;
- throughput grows linearly with cores at that efficiency, and the Parquet store serves the reads.

Cores needed = {args.target_events:,.0f} / ({per_core:,.0f} x {args.efficiency} x {work_seconds:.0f} s)
= **{needed_cores} cores**, e.g. {executors} executors of {args.cores_per_executor} cores. The identity tables
that return to the driver (users, accounts, user keys) measured {identity_bytes / 2**20:,.0f} MiB of Arrow here,
so about {driver_gib:.1f} GiB at {args.target_events:,.0f} events: give the driver that much memory or more, or
write results with `--parquet`.
""")


def _java_version() -> str:
    done = subprocess.run(["java", "-version"], capture_output=True, text=True)
    first = (done.stderr or done.stdout).splitlines()
    return first[0] if first else "unknown"


if __name__ == "__main__":
    main()
