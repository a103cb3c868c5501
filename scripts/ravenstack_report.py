"""Reproduce the ravenstack_saas figures in docs/datasets.md.

The script imports accounts, subscriptions and feature usage through the
mappings in examples/ravenstack/ into an in-memory store and scores them with
examples/ravenstack/model.yaml as of each date. It then compares the scores
with two outcomes read straight from the CSVs:

- upgrade: the account starts a subscription with upgrade_flag True within
  90 days after the as-of date;
- churn: the account's churn_flag in ravenstack_accounts.csv.

As a baseline, it also scores each account by how many subscriptions it has
started by the as-of date: the upgrade outcome counts new subscriptions, so
larger accounts carry it more often, whatever their usage.

Usage: .venv/bin/python scripts/ravenstack_report.py [--data DIR]
"""

from __future__ import annotations

import argparse
import csv
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from b2b_report import DEFAULT_DATA, REPOSITORY, DateFigures, build_store, roc_auc, score_dates  # noqa: E402

EXAMPLE = REPOSITORY / "examples" / "ravenstack"
DATA_SET = Path("ravenstack_saas")
TABLES = ("accounts", "subscriptions", "feature_usage")
AS_OF_DATES = (datetime(2024, 3, 31), datetime(2024, 6, 30), datetime(2024, 9, 30))
UPGRADE_HORIZON = timedelta(days=90)


@dataclass(frozen=True)
class RavenstackFigures:
    as_of: datetime
    accounts: int
    upgraded: int
    pql: int
    pql_upgraded: int
    upgrade_auc: float | None
    churn_auc: float | None
    baseline_auc: float | None


def read_subscriptions(data_dir: Path) -> dict[str, list[tuple[datetime, bool]]]:
    """Return each account's subscriptions as (start date, upgrade_flag)."""
    subscriptions: dict[str, list[tuple[datetime, bool]]] = {}
    with (data_dir / DATA_SET / "ravenstack_subscriptions.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            start = datetime.fromisoformat(row["start_date"])
            subscriptions.setdefault(row["account_id"], []).append((start, row["upgrade_flag"] == "True"))
    return subscriptions


def read_churn(data_dir: Path) -> dict[str, bool]:
    with (data_dir / DATA_SET / "ravenstack_accounts.csv").open(newline="", encoding="utf-8") as handle:
        return {row["account_id"]: row["churn_flag"] == "True" for row in csv.DictReader(handle)}


def upgraded_after(subscriptions: list[tuple[datetime, bool]], as_of: datetime) -> bool:
    return any(flag and as_of < start <= as_of + UPGRADE_HORIZON for start, flag in subscriptions)


def started_by(subscriptions: list[tuple[datetime, bool]], as_of: datetime) -> int:
    return sum(start <= as_of for start, _ in subscriptions)


@dataclass(frozen=True)
class VolumeCheck:
    """New subscriptions in the 90 days after each as-of date, pooled over dates, for one group of accounts."""

    group: str
    account_dates: int
    new_subscriptions: int
    new_upgrades: int

    def line(self) -> str:
        return (
            f"{self.group}: {self.account_dates} account-dates,"
            f" {self.new_subscriptions / self.account_dates:.2f} new subscriptions per account,"
            f" {DateFigures.percent(self.new_upgrades, self.new_subscriptions)} of them flagged as upgrades"
        )


def score_history(data_dir: Path) -> dict[datetime, dict]:
    files = [(data_dir / DATA_SET / f"ravenstack_{table}.csv", EXAMPLE / f"{table}.mapping.yaml") for table in TABLES]
    with build_store(files) as store:
        return score_dates(store, EXAMPLE / "model.yaml", AS_OF_DATES)


def volume_check(history: dict[datetime, dict], subscriptions: dict[str, list[tuple[datetime, bool]]]) -> list[VolumeCheck]:
    """Compare PQL accounts with the others: how many subscriptions they start next, and which share are upgrades."""
    totals = {"PQL": [0, 0, 0], "other": [0, 0, 0]}
    for as_of, scores in history.items():
        for account, score in scores.items():
            flags = [flag for start, flag in subscriptions[account] if as_of < start <= as_of + UPGRADE_HORIZON]
            total = totals["PQL" if score.tier == "pql" else "other"]
            total[0] += 1
            total[1] += len(flags)
            total[2] += sum(flags)
    return [VolumeCheck(group, *counts) for group, counts in totals.items()]


def ravenstack_figures(data_dir: Path = DEFAULT_DATA, history: dict[datetime, dict] | None = None) -> list[RavenstackFigures]:
    """Import, score and measure RavenStack; one row of figures per as-of date."""
    history = history if history is not None else score_history(data_dir)
    subscriptions, churn = read_subscriptions(data_dir), read_churn(data_dir)
    rows = []
    for as_of, scores in history.items():
        accounts = sorted(scores)
        upgraded = {account: upgraded_after(subscriptions[account], as_of) for account in accounts}
        labels = [upgraded[account] for account in accounts]
        pql = [account for account in accounts if scores[account].tier == "pql"]
        values = [scores[account].score for account in accounts]
        rows.append(RavenstackFigures(
            as_of=as_of,
            accounts=len(accounts),
            upgraded=sum(upgraded.values()),
            pql=len(pql),
            pql_upgraded=sum(upgraded[account] for account in pql),
            upgrade_auc=roc_auc(values, labels),
            churn_auc=roc_auc(values, [churn[account] for account in accounts]),
            baseline_auc=roc_auc([started_by(subscriptions[account], as_of) for account in accounts], labels),
        ))
    return rows


def format_table(rows: list[RavenstackFigures]) -> str:
    """Render the figures as the Markdown table in docs/datasets.md."""
    lines = [
        "| as of | accounts | upgrade within 90 days | PQL | PQL upgraded"
        " | ROC AUC, upgrade | ROC AUC, churn | baseline ROC AUC, upgrade |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row.as_of:%Y-%m-%d} | {row.accounts} "
            f"| {row.upgraded} ({DateFigures.percent(row.upgraded, row.accounts)}) "
            f"| {row.pql} | {row.pql_upgraded} ({DateFigures.percent(row.pql_upgraded, row.pql)}) "
            f"| {row.upgrade_auc:.3f} | {row.churn_auc:.3f} | {row.baseline_auc:.3f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder that contains ravenstack_saas/")
    arguments = parser.parse_args()

    history = score_history(arguments.data)
    print(format_table(ravenstack_figures(arguments.data, history)))
    print()
    for check in volume_check(history, read_subscriptions(arguments.data)):
        print(check.line())


if __name__ == "__main__":
    main()
