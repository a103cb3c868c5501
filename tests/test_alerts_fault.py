"""Kill the dispatcher (SIGKILL) at random points of delivery, run after run; every alert still lands once.

The dispatcher runs as ``upsignal alerts deliver`` in a subprocess against the
four local vendor servers in this process. Some runs are killed from inside a
vendor server at a chosen request and phase: received, applied or responded.
In the last two the vendor has the effect but the outbox does not know it
yet. Other runs are killed after a random delay. A final run finishes the
delivery. Slack incoming webhooks cannot deduplicate, so there each kill may
repeat at most the one message in flight; everywhere else each alert's effect
must exist exactly once.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from tests.vendors.accounts import START, add_account, score, set_score
from tests.vendors.harness import KINDS, destination_settings, environment, start_server
from upsignal.config import ProjectConfig
from upsignal.identity import resolve_accounts
from upsignal.store import Store

ACCOUNTS = 80
RUNS = 12
UPSIGNAL = str(Path(sys.executable).with_name("upsignal"))


def write_project(path: Path, servers: dict) -> ProjectConfig:
    entries = []
    for kind, server in servers.items():
        entry = destination_settings(kind, server)
        if kind in ("hubspot", "salesforce"):
            entry["batch_size"] = 4
        if kind == "hubspot":
            entry["rate_limit"] = {"requests": 100, "seconds": 0.5}  # HubSpot's 100 per 10 s, 20 times faster
        entries.append(entry)
    data = {"alerts": {"backoff_seconds": 0.2, "max_backoff_seconds": 0.5, "max_attempts": 50,
                       "destinations": entries}}
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return ProjectConfig.model_validate(data)


def seed(db: Path, settings: ProjectConfig) -> list[str]:
    at = START + timedelta(hours=1)
    with Store(db) as store:
        for number in range(ACCOUNTS):
            add_account(store, f"firm{number:02d}", resolve=False)
            set_score(store, f"firm{number:02d}", 90, at)
        resolve_accounts(store)
        score(store, at, settings.alerts)
        return [row["alert_key"] for row in store.rows("SELECT alert_key FROM alert_outbox")]


class Killer:
    """Kills the running dispatcher in one phase of the n-th request that any server receives."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.target: tuple[int, str] | None = None
        self.ordinals: dict[tuple[str, int], int] = {}
        self.lock = threading.Lock()

    def arm(self, process: subprocess.Popen | None, target: tuple[int, str] | None) -> None:
        with self.lock:
            self.process, self.target, self.ordinals = process, target, {}

    def hook_for(self, server_name: str):
        def hook(phase: str, number: int) -> None:
            with self.lock:
                if phase == "received":
                    self.ordinals[(server_name, number)] = len(self.ordinals) + 1
                ordinal = self.ordinals.get((server_name, number))
                if self.target == (ordinal, phase) and self.process is not None:
                    os.kill(self.process.pid, signal.SIGKILL)
                    self.target = None

        return hook


def deliver_once(db: Path, project: Path, env: dict, killer: Killer, target: tuple[int, str] | None,
                 delay: float | None) -> int:
    """Run one delivery, killed at ``target`` or after ``delay`` seconds if given; return its exit code."""
    process = subprocess.Popen(
        [UPSIGNAL, "alerts", "deliver", "--db", str(db), "--project", str(project), "--wait", "20"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    killer.arm(process, target)
    timer = threading.Timer(delay, process.kill) if delay is not None else None
    if timer:
        timer.start()
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        if timer:
            timer.cancel()
        killer.arm(None, None)
    assert process.returncode in (0, -signal.SIGKILL), stderr.decode()
    return process.returncode


@pytest.mark.slow
def test_sigkill_never_loses_or_repeats_alerts(tmp_path):
    rng = random.Random(20240301)
    servers = {kind: start_server(kind) for kind in KINDS}
    killer = Killer()
    env = dict(os.environ)
    for kind, server in servers.items():
        server.latency = 0.005
        server.hook = killer.hook_for(kind)
        env.update(environment(kind, server))
    project = tmp_path / "upsignal.yaml"
    db = tmp_path / "alerts.duckdb"
    settings = write_project(project, servers)
    keys = seed(db, settings)

    kills = 0
    for run in range(RUNS):
        if run % 3 == 2:
            target, delay = None, rng.uniform(1.2, 2.5)  # startup takes about a second
        else:
            target, delay = (rng.randint(1, 40), rng.choice(["received", "applied", "responded"])), None
        kills += deliver_once(db, project, env, killer, target, delay) != 0
    assert deliver_once(db, project, env, killer, None, None) == 0
    for server in servers.values():
        server.stop()

    with Store(db, read_only=True) as store:
        statuses = Counter(row["status"] for row in store.rows("SELECT status FROM alert_outbox"))
        interrupted = store.scalar("SELECT count(*) FROM alert_attempts WHERE outcome = 'interrupted'")
    assert statuses == {"delivered": ACCOUNTS * len(KINDS)}
    assert kills >= RUNS // 2
    assert interrupted >= 1
    webhook_keys = set(servers["webhook"].effects)
    hubspot_notes = servers["hubspot"].engagement_counts("notes")
    salesforce_tasks = servers["salesforce"].tasks_by_key()
    slack_messages = servers["slack"].alert_counts()
    assert len(keys) == ACCOUNTS * len(KINDS)
    assert set(servers["webhook"].effects.values()) == {1}
    assert set(hubspot_notes.values()) == {1}
    assert set(salesforce_tasks.values()) == {1}
    assert len(webhook_keys) == len(hubspot_notes) == len(salesforce_tasks) == len(slack_messages) == ACCOUNTS
    assert webhook_keys | set(hubspot_notes) | set(salesforce_tasks) | set(slack_messages) <= set(keys)
    assert sum(slack_messages.values()) - len(slack_messages) <= kills
    for number in range(ACCOUNTS):
        domain = f"firm{number:02d}.example"
        assert len(servers["hubspot"].companies_with("upsignal_domain", domain)) == 1
        assert sum(1 for account in servers["salesforce"].records["Account"].values()
                   if account.get("Upsignal_Domain__c") == domain) == 1
