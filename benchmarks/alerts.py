"""Benchmark alert delivery: 10,000 accounts become PQLs in one scoring run.

The destinations are the local vendor servers of the test suite (tests/vendors),
on 127.0.0.1, in this process. Two phases, each on a fresh copy of the store:

1. Throughput: each destination alone, with its rate limit lifted, drains its
   alerts; the figure is alerts per second.
2. Drain within the documented limits: HubSpot, Salesforce and the webhook at
   once. HubSpot runs at its real 100 requests per 10 s, and the local server
   enforces the same window. Salesforce and the webhook have no per-second
   limit, because Salesforce's allocation is per 24 hours.

Slack sends one message per alert at 1 message per second, so 10,000 alerts
would take 2 h 47 min. Slack runs on a sample of ``--slack-sample`` accounts
instead: unthrottled in phase 1, and in phase 2 at a time-scaled limit of one
message per 50 ms on both sides, with the real drain time projected.

    .venv/bin/python benchmarks/alerts.py                      # 10,000 accounts
    .venv/bin/python benchmarks/alerts.py --accounts 1000 --slack-sample 100 --no-record
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from report import machine_line, write_section  # noqa: E402

from tests.vendors.harness import KINDS, destination_settings, environment, start_server  # noqa: E402
from upsignal.alerts.dispatcher import Dispatcher  # noqa: E402
from upsignal.config import ProjectConfig  # noqa: E402
from upsignal.events.schema import event_timestamp, parse_message, to_row, utc_now  # noqa: E402
from upsignal.events.writer import EventWriter  # noqa: E402
from upsignal.identity import resolve_accounts  # noqa: E402
from upsignal.scoring import score_accounts  # noqa: E402
from upsignal.signals.model import parse_model  # noqa: E402
from upsignal.store import Store  # noqa: E402

WORK = ROOT / "benchmarks" / "work"
AS_OF = datetime(2024, 3, 1, 12)
MODEL_YAML = """
name: alerts-benchmark
signals:
  level: {type: last, event: Level Set, property: level, window: 30d, sentence: "reached level {value}"}
rules:
  - signal: level
    steps: [{at: 50, points: 50}, {at: 90, points: 90}]
tiers:
  - {name: cold, min: 0}
  - {name: pql, min: 80, exit_below: 70}
"""
LIFTED = {"requests": 1_000_000, "seconds": 1}
# Slack's documented 1 message per second, 20 times faster.
SLACK_SCALE = 20
SLACK_SCALED = {"requests": 1, "seconds": 1 / SLACK_SCALE}
# HubSpot private apps on Free and Starter: 100 requests per 10 seconds.
HUBSPOT_LIMIT = {"requests": 100, "seconds": 10}
BULK_KINDS = ("webhook", "hubspot", "salesforce")


def remove_store(path: Path) -> None:
    """Delete a store file and its write-ahead log, which DuckDB would otherwise replay onto a new file."""
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".wal").unlink(missing_ok=True)


def build_events(path: Path, accounts: int) -> None:
    """Write a store with ``accounts`` accounts, each with one user at level 90 (a PQL) as of AS_OF."""
    remove_store(path)
    received = AS_OF
    rows = []
    for number in range(accounts):
        user, group = f"u{number}", f"firm{number:05d}"
        for record in (
            {"type": "group", "userId": user, "groupId": group, "messageId": f"g{number}",
             "timestamp": "2024-03-01T08:00:00Z", "traits": {"name": f"Firm {number}", "domain": f"{group}.example"}},
            {"type": "track", "userId": user, "event": "Level Set", "messageId": f"t{number}",
             "timestamp": "2024-03-01T09:00:00Z", "properties": {"level": 90}},
        ):
            message = parse_message(record)
            timestamp, clamped = event_timestamp(message, received)
            rows.append(to_row(message, message.messageId, timestamp, clamped, received, "benchmark"))
    with Store(path) as store:
        EventWriter(store).write(rows)
        resolve_accounts(store)


def project_for(servers: dict, limits: dict[str, dict | None]) -> ProjectConfig:
    entries = [{**destination_settings(kind, server), "timeout_seconds": 30, "rate_limit": limits.get(kind)}
               for kind, server in servers.items()]
    return ProjectConfig.model_validate({"alerts": {"destinations": entries}})


def scored_copy(events: Path, target: Path, project: ProjectConfig) -> float:
    """Copy an events store and score it, writing one outbox row per account and destination."""
    remove_store(target)
    shutil.copy(events, target)
    model = parse_model(MODEL_YAML, "benchmark model")
    started = time.perf_counter()
    with Store(target) as store:
        run = score_accounts(store, model, MODEL_YAML, AS_OF, alerts=project.alerts)
    assert run.transitions > 0
    return time.perf_counter() - started


def start_servers(kinds: tuple[str, ...]) -> dict:
    servers = {kind: start_server(kind) for kind in kinds}
    for kind, server in servers.items():
        os.environ.update(environment(kind, server))
    return servers


def throughput(events: Path, kinds: tuple[str, ...], accounts: int) -> tuple[dict[str, float], float]:
    """Measure phase 1: alerts per second of each destination alone, without rate limits."""
    servers = start_servers(kinds)
    project = project_for(servers, {kind: LIFTED for kind in kinds})
    db = WORK / "alerts-throughput.duckdb"
    scoring = scored_copy(events, db, project)
    rates = {}
    with Store(db) as store:
        for kind in kinds:
            name = f"test-{kind}"
            started = time.perf_counter()
            with Dispatcher(store, project, [name]) as dispatcher:
                report = dispatcher.deliver()
            elapsed = time.perf_counter() - started
            assert report[name]["delivered"] == accounts, report
            rates[kind] = accounts / elapsed
            print(f"  {kind:<10} {accounts:,} alerts in {elapsed:6.1f} s: {rates[kind]:8,.0f} alerts/s", flush=True)
    for server in servers.values():
        server.stop()
    return rates, scoring


def drain(events: Path, kinds: tuple[str, ...], accounts: int, limits: dict[str, dict]) -> dict[str, dict]:
    """Measure phase 2: drain the destinations at once within the documented (or scaled) limits.

    The local servers enforce the same limits, so a 429 in the figures means upsignal went too fast.
    """
    servers = start_servers(kinds)
    if "hubspot" in servers:
        servers["hubspot"].limit_per_window = HUBSPOT_LIMIT["requests"]
        servers["hubspot"].window_seconds = HUBSPOT_LIMIT["seconds"]
    if "slack" in servers:
        servers["slack"].burst, servers["slack"].window = SLACK_SCALED["requests"], SLACK_SCALED["seconds"]
    project = project_for(servers, limits)
    db = WORK / "alerts-drain.duckdb"
    scored_copy(events, db, project)
    with Store(db) as store:
        started = utc_now()
        with Dispatcher(store, project) as dispatcher:
            report = dispatcher.deliver()
        finished = {row["destination"]: row["last"] for row in store.rows(
            "SELECT destination, max(delivered_at) AS last FROM alert_outbox GROUP BY destination")}
    figures = {}
    for kind, server in servers.items():
        name = f"test-{kind}"
        assert report[name]["delivered"] == accounts, report
        figures[kind] = {"seconds": (finished[name] - started).total_seconds(), "requests": len(server.log),
                         "rejected_429": server.statuses().count(429)}
        print(f"  {kind:<10} {accounts:,} alerts drained in {figures[kind]['seconds']:6.1f} s,"
              f" {figures[kind]['requests']:,} requests, {figures[kind]['rejected_429']} of them answered 429",
              flush=True)
        server.stop()
    return figures


def record(accounts: int, sample: int, scoring: float, rates: dict[str, float], figures: dict[str, dict],
           load: float) -> None:
    slack_hours = accounts / 3600
    hubspot_batches = -(-accounts // 100)
    lines = [
        f"{machine_line()} One-minute load average at the start: {load:.1f}.",
        "",
        f"{accounts:,} accounts cross into the pql tier in one scoring run, which stores {accounts:,} transitions"
        f" and {accounts * len(BULK_KINDS):,} outbox rows (one per destination) in {scoring:.1f} s. The destinations"
        " are the local vendor servers of the test suite (tests/vendors) on 127.0.0.1, in the benchmark's process,"
        " so the figures measure upsignal and Python HTTP on one machine, not the vendors.",
        "",
        "| destination | alerts | alerts/s, no rate limit | limit applied when draining | drain time | requests | 429s |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    limits = {
        "hubspot": "100 requests per 10 s (documented; the local server enforces it too)",
        "salesforce": "none per second (24-hour allocation)",
        "webhook": "none (the receiver's own)",
        "slack": f"1 message per 50 ms: the documented 1 per second, {SLACK_SCALE} times faster",
    }
    for kind in (*BULK_KINDS, "slack"):
        count = sample if kind == "slack" else accounts
        drained = figures[kind]
        lines.append(f"| {kind} | {count:,} | {rates[kind]:,.0f} | {limits[kind]} | {drained['seconds']:.1f} s"
                     f" | {drained['requests']:,} | {drained['rejected_429']} |")
    lines += [
        "",
        f"Slack ran on {sample:,} accounts because it posts one message per alert at 1 per second: at its real"
        f" limit {accounts:,} alerts take {accounts:,} s ({slack_hours:.1f} hours) per webhook. Each Slack alert is"
        " its own batch, so a crash can repeat at most one message, and its two store transactions per alert set"
        f" its unthrottled rate. HubSpot sends 100 alerts per batch in"
        f" {figures['hubspot']['requests'] / hubspot_batches:.1f} requests on average, so its documented limit,"
        " not upsignal, sets its drain time.",
    ]
    write_section("Alerts (benchmarks/alerts.py)", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--slack-sample", type=int, default=500, help="Accounts for the Slack runs.")
    parser.add_argument("--no-record", action="store_true", help="Do not write BENCHMARKS.md.")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0]
    events, sample = WORK / "alerts-events.duckdb", WORK / "alerts-sample.duckdb"
    print(f"building {args.accounts:,} accounts, and {args.slack_sample:,} for Slack", flush=True)
    build_events(events, args.accounts)
    build_events(sample, args.slack_sample)
    print("phase 1: each destination alone, no rate limit", flush=True)
    rates, scoring = throughput(events, BULK_KINDS, args.accounts)
    rates.update(throughput(sample, ("slack",), args.slack_sample)[0])
    print("phase 2: drain within the documented limits (Slack: time-scaled)", flush=True)
    figures = drain(events, BULK_KINDS, args.accounts, {"hubspot": HUBSPOT_LIMIT})
    figures.update(drain(sample, ("slack",), args.slack_sample, {"slack": SLACK_SCALED}))
    if not args.no_record:
        record(args.accounts, args.slack_sample, scoring, rates, figures, load)


if __name__ == "__main__":
    main()
