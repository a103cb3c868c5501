"""The main job on the three real data sets, and the bundled Sparkify demo end to end.

The data sets live outside the repository, in ``tests/conftest.py::SHARED_DATA``.
A test that needs one skips, naming the folder, where it is absent.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shlex
import sys
from datetime import datetime
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import SHARED_DATA
from upsignal.cli import run_app
from upsignal.events.importers import import_file
from upsignal.events.mapping import load_mapping
from upsignal.identity import resolve_accounts
from upsignal.store import Store

REPOSITORY = Path(__file__).resolve().parents[1]
EXAMPLES = REPOSITORY / "examples"
B2B = SHARED_DATA / "b2b_trial_events"
SPARKIFY = SHARED_DATA / "sparkify_eventsim_2018-11"
RAVENSTACK = SHARED_DATA / "ravenstack_saas"
SPARKIFY_UPGRADERS = {"15", "16", "29", "36", "49", "80", "85", "88"}


def require(folder: Path) -> None:
    if not folder.is_dir():
        pytest.skip(f"data set folder {folder} is absent; it lives beside the repository, not in it")


def load_script(name: str) -> ModuleType:
    """Import scripts/<name>.py as a module, the way the report scripts import each other."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPOSITORY / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def docs_text() -> str:
    return (REPOSITORY / "docs" / "datasets.md").read_text(encoding="utf-8")


def sparkify_sources() -> list[Path]:
    return sorted(SPARKIFY.glob("2018-11-*-events.json"))


# -- b2b_trial_events ----------------------------------------------------------------


@pytest.fixture(scope="module")
def b2b():
    require(B2B)
    with Store(":memory:") as store:
        report = import_file(store, B2B / "cleaned_trial_data.csv", mapping=load_mapping(EXAMPLES / "b2b_trial" / "mapping.yaml"))
        resolve_accounts(store)
        yield store, report


def test_b2b_imports_every_row(b2b):
    _, report = b2b
    assert report.imported == 102_895
    assert report.rejected == 0
    assert report.duplicates == 0


def test_b2b_organisations_become_accounts(b2b):
    store, _ = b2b
    assert store.scalar("SELECT count(*) FROM accounts") == 966
    assert store.scalar("SELECT count(*) FROM users") == 966
    assert store.scalar("SELECT count(*) FROM accounts WHERE kind <> 'group'") == 0
    assert store.scalar("SELECT count(*) FROM users WHERE account_id <> user_id") == 0


def test_b2b_activity_counts(b2b):
    store, _ = b2b
    counts = dict(store.conn.execute("SELECT event, count(*) FROM events GROUP BY event").fetchall())
    assert len(counts) == 28
    assert counts["Mobile.Schedule.Loaded"] == 49_540
    assert counts["Scheduling.Shift.Created"] == 31_818
    assert counts["Shift.View.Opened"] == 3


def test_b2b_naive_timestamps_read_as_utc(b2b):
    store, _ = b2b
    first, last = store.conn.execute("SELECT min(timestamp), max(timestamp) FROM events").fetchone()
    assert first == datetime(2024, 1, 1, 20, 52, 26)
    assert last == datetime(2024, 4, 28, 15, 10, 31)


def test_b2b_outcome_not_imported(b2b):
    store, _ = b2b
    assert store.scalar("SELECT count(*) FROM events WHERE properties ILIKE '%convert%'") == 0


def test_b2b_reimport_stores_nothing(b2b):
    store, _ = b2b
    again = import_file(store, B2B / "cleaned_trial_data.csv", mapping=load_mapping(EXAMPLES / "b2b_trial" / "mapping.yaml"))
    assert again.imported == 0
    assert again.duplicates == 102_895
    assert store.scalar("SELECT count(*) FROM events") == 102_895


def test_b2b_docs_table_matches_script():
    require(B2B)
    report = load_script("b2b_report")
    rows = report.b2b_figures(SHARED_DATA)
    assert report.format_table(rows) in docs_text()
    assert report.distinct_pql(rows) == (39, 9)


def test_b2b_docs_activity_aucs_match():
    require(B2B)
    aucs = load_script("b2b_report").activity_aucs(B2B / "cleaned_trial_data.csv")
    assert {name: round(auc, 3) for name, auc in aucs.items()} == {
        "total_events": 0.502,
        "first_week_events": 0.5,
        "active_days": 0.502,
        "distinct_activities": 0.507,
    }


def test_roc_auc_reference_values():
    roc_auc = load_script("b2b_report").roc_auc
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    assert roc_auc([1, 2, 3], [False, False, True]) == 1.0
    assert roc_auc([5, 5], [True, False]) == 0.5
    assert roc_auc([1, 2], [True, True]) is None


# -- sparkify_eventsim_2018-11 ---------------------------------------------------------


@pytest.fixture(scope="module")
def sparkify_month():
    require(SPARKIFY)
    mapping = load_mapping(EXAMPLES / "sparkify" / "mapping.yaml")
    with Store(":memory:") as store:
        reports = {path.name: import_file(store, path, mapping=mapping) for path in sparkify_sources()}
        resolve_accounts(store)
        yield store, reports


def test_sparkify_month_imports_logged_in_events(sparkify_month):
    _, reports = sparkify_month
    assert len(reports) == 30
    assert sum(report.imported for report in reports.values()) == 8_056 - 286
    assert sum(report.rejected for report in reports.values()) == 286
    assert sum(report.duplicates for report in reports.values()) == 0


def test_sparkify_logged_out_rejected_clearly(sparkify_month):
    _, reports = sparkify_month
    messages = {error.message for report in reports.values() for error in report.errors}
    assert messages == {"userId or anonymousId is required"}


def test_sparkify_blank_lines_skipped(sparkify_month):
    _, reports = sparkify_month
    first_day = reports["2018-11-01-events.json"]
    assert first_day.imported + first_day.rejected == 15


def test_sparkify_listeners_are_personal_accounts(sparkify_month):
    store, _ = sparkify_month
    assert store.scalar("SELECT count(*) FROM users") == 97
    assert store.scalar("SELECT count(*) FROM accounts") == 97
    assert store.scalar("SELECT count(*) FROM accounts WHERE kind <> 'personal'") == 0
    assert store.scalar("SELECT count(*) FROM users WHERE account_id <> 'user:' || user_id") == 0


def test_sparkify_known_listener(sparkify_month):
    store, _ = sparkify_month
    assert store.scalar("SELECT name FROM accounts WHERE account_id = 'user:29'") == "Jacqueline"
    upgraded_at = store.scalar(
        "SELECT timestamp FROM events WHERE user_id = '29' AND event = 'Submit Upgrade'"
    )
    assert upgraded_at == datetime(2018, 11, 8, 6, 24, 19, 796_000)


def test_sparkify_upgraders_found(sparkify_month):
    store, _ = sparkify_month
    rows = store.conn.execute("SELECT DISTINCT user_id FROM events WHERE event = 'Submit Upgrade'").fetchall()
    assert {row[0] for row in rows} == SPARKIFY_UPGRADERS


def test_sparkify_page_counts(sparkify_month):
    store, _ = sparkify_month
    counts = dict(store.conn.execute("SELECT event, count(*) FROM events GROUP BY event").fetchall())
    assert counts["NextSong"] == 6_820
    assert counts["Upgrade"] == 21
    assert counts["Submit Upgrade"] == 8


def test_sparkify_free_level_property(sparkify_month):
    store, _ = sparkify_month
    levels = dict(store.conn.execute(
        "SELECT properties ->> '$.level', count(*) FROM events GROUP BY 1"
    ).fetchall())
    assert set(levels) == {"free", "paid"}
    assert sum(levels.values()) == 7_770


# -- the bundled Sparkify sample and make demo --------------------------------------------

SAMPLE = EXAMPLES / "sparkify" / "events.jsonl"


def test_sample_under_two_megabytes():
    assert SAMPLE.stat().st_size < 2 * 1024 * 1024


def test_sample_checksum_in_readme():
    digest = hashlib.sha256(SAMPLE.read_bytes()).hexdigest()
    assert digest in (EXAMPLES / "sparkify" / "README.md").read_text(encoding="utf-8")


def test_sample_lines_match_source():
    require(SPARKIFY)
    source_lines = []
    for path in sparkify_sources()[:14]:
        source_lines += path.read_bytes().splitlines()
    assert SAMPLE.read_bytes().splitlines() == source_lines


def demo_commands(db: Path) -> list[list[str]]:
    """Return the upsignal commands of the Makefile's demo target, with the store at ``db``."""
    makefile = (REPOSITORY / "Makefile").read_text(encoding="utf-8").splitlines()
    start = makefile.index("demo: $(STAMP)")
    commands = []
    for line in makefile[start + 1:]:
        if not line.startswith("\t"):
            break
        words = shlex.split(line.strip().replace("$(DEMO_DB)", str(db)))
        if words[0] == "$(BIN)/upsignal":
            commands.append(words[1:])
    return commands


def test_demo_commands_found(tmp_path):
    names = [command[0] for command in demo_commands(tmp_path / "demo.duckdb")]
    assert names == ["import", "score", "accounts"]


def test_demo_runs_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPOSITORY)
    for command in demo_commands(tmp_path / "demo.duckdb"):
        assert run_app(command) == 0, command
    output = capsys.readouterr()
    assert "2,964 imported, 77 rejected, 0 duplicates" in output.err
    assert "2 pql, 3 hot, 12 warm, 69 cold" in output.err
    assert "user:66" in output.out
    assert "Kevin" in output.out


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    """Build the demo store with the Makefile's commands, once for the tests that read it."""
    db = tmp_path_factory.mktemp("demo") / "demo.duckdb"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(REPOSITORY)
        for command in demo_commands(db):
            assert run_app(command) == 0, command
    return db


def test_demo_pql_accounts_have_reasons(demo_db, capsys):
    assert run_app(["accounts", "--db", str(demo_db), "--tier", "pql", "--json"]) == 0
    accounts = json.loads(capsys.readouterr().out)
    assert [account["account_id"] for account in accounts] == ["user:66", "user:26"]
    assert accounts[0]["reasons"][0] == "Upgrade page visits in the last 28 days: 1"
    assert accounts[1]["reasons"][0] == (
        "played 23 songs on the free plan in the last 7 days, up from 18 the 7 days before"
    )


def test_demo_excludes_paying_listeners(demo_db, capsys):
    assert run_app(["accounts", "--db", str(demo_db), "--json", "--limit", "100"]) == 0
    accounts = json.loads(capsys.readouterr().out)
    assert len(accounts) == 86
    for account in accounts:
        if account["signals"]["paid_activity"] > 0:
            assert account["score"] == 0, account["account_id"]


def test_demo_explains_top_account(demo_db, capsys):
    assert run_app(["explain", "user:66", "--db", str(demo_db), "--json"]) == 0
    explanation = json.loads(capsys.readouterr().out)
    rules = {item["rule"]: item for item in explanation["contributions"]}
    assert rules["upgrade_page_visits"]["points"] == 25
    assert rules["free_songs_played"]["value"] == 14
    assert rules["free_songs_played"]["threshold"] == 10


# -- ravenstack_saas -----------------------------------------------------------------------

RAVENSTACK_TABLES = ("accounts", "subscriptions", "feature_usage")


@pytest.fixture(scope="module")
def ravenstack():
    require(RAVENSTACK)
    with Store(":memory:") as store:
        reports = {
            table: import_file(
                store,
                RAVENSTACK / f"ravenstack_{table}.csv",
                mapping=load_mapping(EXAMPLES / "ravenstack" / f"{table}.mapping.yaml"),
            )
            for table in RAVENSTACK_TABLES
        }
        resolve_accounts(store)
        yield store, reports


def test_ravenstack_imports_every_row(ravenstack):
    _, reports = ravenstack
    assert [reports[table].imported for table in RAVENSTACK_TABLES] == [500, 5_000, 25_000]
    assert sum(report.rejected for report in reports.values()) == 0
    assert sum(report.duplicates for report in reports.values()) == 0


def test_ravenstack_reused_usage_ids_kept(ravenstack):
    store, _ = ravenstack
    usage_ids = store.scalar("SELECT count(DISTINCT properties ->> '$.usage_id') FROM events WHERE type = 'track'")
    assert usage_ids == 24_979


def test_ravenstack_subscriptions_join_accounts(ravenstack):
    store, _ = ravenstack
    assert store.scalar("SELECT count(*) FROM accounts") == 500
    assert store.scalar("SELECT count(*) FROM users") == 5_000
    assert store.scalar("SELECT count(*) FROM users WHERE joined_by <> 'group'") == 0
    assert store.scalar("SELECT account_id FROM users WHERE user_id = 'S-8cec59'") == "A-3c1a3f"


def test_ravenstack_account_traits(ravenstack):
    store, _ = ravenstack
    row = store.rows("SELECT name, traits FROM accounts WHERE account_id = 'A-2e4581'")[0]
    traits = json.loads(row["traits"])
    assert row["name"] == "Company_0"
    assert traits["industry"] == "EdTech"
    assert traits["country"] == "US"
    assert traits["plan"] == "Basic"
    assert traits["seats"] == 9
    assert traits["is_trial"] is False
    assert "churn_flag" not in traits


def test_ravenstack_docs_table_matches_script():
    require(RAVENSTACK)
    report = load_script("ravenstack_report")
    history = report.score_history(SHARED_DATA)
    assert report.format_table(report.ravenstack_figures(SHARED_DATA, history)) in docs_text()
    checks = {check.group: check for check in report.volume_check(history, report.read_subscriptions(SHARED_DATA))}
    assert checks["PQL"].line() == "PQL: 96 account-dates, 3.49 new subscriptions per account, 11.3% of them flagged as upgrades"
    assert checks["other"].line() == (
        "other: 1404 account-dates, 2.44 new subscriptions per account, 10.1% of them flagged as upgrades"
    )
