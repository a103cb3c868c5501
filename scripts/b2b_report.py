"""Reproduce the b2b_trial_events figures in docs/datasets.md.

The script imports the trial log through examples/b2b_trial/mapping.yaml into
an in-memory store and scores it with examples/b2b_trial/model.yaml as of
each date. It then compares the organisations the model flags with the
conversion labels, which it reads straight from the CSV.

At each as-of date, only organisations in a running trial are counted:
the trial has started and not ended, and they have not converted yet. Such
an organisation counts as converted if it converts at any later time, after
the trial's end included.

Usage: .venv/bin/python scripts/b2b_report.py [--data DIR] [--list DATE]
"""

from __future__ import annotations

import argparse
import csv
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb

from upsignal.events.importers import import_file
from upsignal.events.mapping import load_mapping
from upsignal.identity import resolve_accounts
from upsignal.scoring import score_accounts
from upsignal.signals.model import load_model
from upsignal.store import Store

REPOSITORY = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPOSITORY.parent / "shared" / "data"
EXAMPLE = REPOSITORY / "examples" / "b2b_trial"
LOG_FILE = Path("b2b_trial_events") / "cleaned_trial_data.csv"
AS_OF_DATES = (
    datetime(2024, 1, 15), datetime(2024, 2, 1), datetime(2024, 2, 15), datetime(2024, 3, 1),
    datetime(2024, 3, 15), datetime(2024, 4, 1), datetime(2024, 4, 15),
)


@dataclass(frozen=True)
class Outcome:
    """An organisation's trial window and conversion, from the labelled columns of the log."""

    trial_start: datetime
    trial_end: datetime
    converted_at: datetime | None


@dataclass(frozen=True)
class Score:
    score: float
    tier: str


@dataclass(frozen=True)
class DateFigures:
    """The model's flags at one as-of date against later conversion."""

    as_of: datetime
    open_trials: int
    open_converted: int
    pql: int
    pql_converted: int
    hot_or_pql: int
    hot_or_pql_converted: int
    auc: float | None
    pql_converters: frozenset[str]
    pql_others: frozenset[str]

    @staticmethod
    def percent(part: int, whole: int) -> str:
        return f"{100 * part / whole:.1f}%" if whole else "n/a"


def read_outcomes(path: Path) -> dict[str, Outcome]:
    """Read each organisation's trial window and conversion time (None if it never converted)."""
    outcomes: dict[str, Outcome] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            organisation = row["ORGANIZATION_ID"]
            if organisation in outcomes:
                continue
            converted_at = datetime.fromisoformat(row["CONVERTED_AT"]) if row["CONVERTED"] == "True" else None
            outcomes[organisation] = Outcome(
                datetime.fromisoformat(row["TRIAL_START"]), datetime.fromisoformat(row["TRIAL_END"]), converted_at
            )
    return outcomes


def build_store(files: Iterable[tuple[Path, Path]]) -> Store:
    """Import (data file, mapping file) pairs in order into a fresh in-memory store and resolve accounts."""
    store = Store(":memory:")
    for data_file, mapping_file in files:
        import_file(store, data_file, mapping=load_mapping(mapping_file))
    resolve_accounts(store)
    return store


def score_dates(store: Store, model_file: Path, dates: Iterable[datetime]) -> dict[datetime, dict[str, Score]]:
    """Score every account as of each date, oldest first, and return each run's scores by account."""
    model, text = load_model(model_file)
    history = {}
    for as_of in sorted(dates):
        run = score_accounts(store, model, text, as_of)
        rows = store.rows("SELECT account_id, score, tier FROM account_scores WHERE run_id = ?", [run.run_id])
        history[as_of] = {row["account_id"]: Score(row["score"], row["tier"]) for row in rows}
    return history


def roc_auc(scores: list[float], labels: list[bool]) -> float | None:
    """Return the ROC AUC of scores against labels (ties count half), or None without both classes.

    >>> roc_auc([0.1, 0.4, 0.35, 0.8], [False, False, True, True])
    0.75
    >>> roc_auc([5, 5, 5], [True, False, False])
    0.5
    """
    positives = [score for score, label in zip(scores, labels) if label]
    negatives = [score for score, label in zip(scores, labels) if not label]
    if not positives or not negatives:
        return None
    wins = 0.0
    for positive in positives:
        for negative in negatives:
            if positive > negative:
                wins += 1.0
            elif positive == negative:
                wins += 0.5
    return wins / (len(positives) * len(negatives))


def in_open_trial(outcome: Outcome, as_of: datetime) -> bool:
    running = outcome.trial_start <= as_of < outcome.trial_end
    return running and (outcome.converted_at is None or outcome.converted_at > as_of)


def figures_for(as_of: datetime, scores: dict[str, Score], outcomes: dict[str, Outcome], pql_tier: str) -> DateFigures:
    """Count open trials, the flagged ones and how many of each converted later."""
    open_ids = [org for org, outcome in outcomes.items() if in_open_trial(outcome, as_of)]
    converted = {org: outcomes[org].converted_at is not None for org in open_ids}
    pql = [org for org in open_ids if scores[org].tier == pql_tier]
    hot_or_pql = [org for org in open_ids if scores[org].tier in ("hot", pql_tier)]
    return DateFigures(
        as_of=as_of,
        open_trials=len(open_ids),
        open_converted=sum(converted.values()),
        pql=len(pql),
        pql_converted=sum(converted[org] for org in pql),
        hot_or_pql=len(hot_or_pql),
        hot_or_pql_converted=sum(converted[org] for org in hot_or_pql),
        auc=roc_auc([scores[org].score for org in open_ids], [converted[org] for org in open_ids]),
        pql_converters=frozenset(org for org in pql if converted[org]),
        pql_others=frozenset(org for org in pql if not converted[org]),
    )


def b2b_figures(data_dir: Path = DEFAULT_DATA, dates: Iterable[datetime] = AS_OF_DATES) -> list[DateFigures]:
    """Import, score and measure the b2b trial log; one row of figures per as-of date."""
    log_file = data_dir / LOG_FILE
    outcomes = read_outcomes(log_file)
    with build_store([(log_file, EXAMPLE / "mapping.yaml")]) as store:
        history = score_dates(store, EXAMPLE / "model.yaml", dates)
    pql_tier = load_model(EXAMPLE / "model.yaml")[0].pql_tier
    return [figures_for(as_of, scores, outcomes, pql_tier) for as_of, scores in history.items()]


# Per-organisation activity counted up to conversion or trial end, whichever
# comes first, so no activity after the outcome leaks into the feature.
ACTIVITY_FEATURES_SQL = """
SELECT CONVERTED AS converted,
       count(*) AS total_events,
       count(*) FILTER (WHERE DAYS_FROM_START < 7) AS first_week_events,
       count(DISTINCT DAYS_FROM_START) AS active_days,
       count(DISTINCT ACTIVITY_NAME) AS distinct_activities
FROM read_csv(?)
WHERE TIMESTAMP <= least(coalesce(CONVERTED_AT, TRIAL_END), TRIAL_END)
GROUP BY ORGANIZATION_ID, CONVERTED
"""


def activity_aucs(log_file: Path) -> dict[str, float | None]:
    """Return the ROC AUC against conversion of each plain per-organisation activity count."""
    cursor = duckdb.connect().execute(ACTIVITY_FEATURES_SQL, [str(log_file)])
    names = [column[0] for column in cursor.description]
    columns = dict(zip(names, zip(*cursor.fetchall())))
    labels = list(columns.pop("converted"))
    return {name: roc_auc(list(values), labels) for name, values in columns.items()}


def format_table(rows: list[DateFigures]) -> str:
    """Render the figures as the Markdown table in docs/datasets.md."""
    lines = [
        "| as of | open trials | converted later | PQL | PQL converted | hot or PQL | hot or PQL converted | ROC AUC |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        auc = "n/a" if row.auc is None else f"{row.auc:.3f}"
        lines.append(_table_line(f"{row.as_of:%Y-%m-%d}", row, auc))
    pooled = DateFigures(
        as_of=rows[0].as_of,
        open_trials=sum(row.open_trials for row in rows),
        open_converted=sum(row.open_converted for row in rows),
        pql=sum(row.pql for row in rows),
        pql_converted=sum(row.pql_converted for row in rows),
        hot_or_pql=sum(row.hot_or_pql for row in rows),
        hot_or_pql_converted=sum(row.hot_or_pql_converted for row in rows),
        auc=None,
        pql_converters=frozenset(),
        pql_others=frozenset(),
    )
    lines.append(_table_line("all dates", pooled, ""))
    return "\n".join(lines)


def _table_line(label: str, row: DateFigures, auc: str) -> str:
    return (
        f"| {label} | {row.open_trials} "
        f"| {row.open_converted} ({row.percent(row.open_converted, row.open_trials)}) "
        f"| {row.pql} | {row.pql_converted} ({row.percent(row.pql_converted, row.pql)}) "
        f"| {row.hot_or_pql} | {row.hot_or_pql_converted} ({row.percent(row.hot_or_pql_converted, row.hot_or_pql)}) "
        f"| {auc} |"
    )


def distinct_pql(rows: list[DateFigures]) -> tuple[int, int]:
    """Count the organisations flagged PQL at one date or more, and how many of them converted."""
    converters = frozenset().union(*(row.pql_converters for row in rows))
    others = frozenset().union(*(row.pql_others for row in rows))
    return len(converters | others), len(converters)


def flagged_organisations(data_dir: Path, as_of: datetime) -> list[tuple[str, float, bool]]:
    """List the open trials in the PQL tier as of a date: (organisation, score, converted later)."""
    log_file = data_dir / LOG_FILE
    outcomes = read_outcomes(log_file)
    with build_store([(log_file, EXAMPLE / "mapping.yaml")]) as store:
        scores = score_dates(store, EXAMPLE / "model.yaml", [as_of])[as_of]
    pql_tier = load_model(EXAMPLE / "model.yaml")[0].pql_tier
    flagged = [
        (org, scores[org].score, outcome.converted_at is not None)
        for org, outcome in outcomes.items()
        if in_open_trial(outcome, as_of) and scores[org].tier == pql_tier
    ]
    return sorted(flagged, key=lambda item: (-item[1], item[0]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder that contains b2b_trial_events/")
    parser.add_argument("--list", metavar="DATE", help="also list the PQL organisations as of this ISO date")
    arguments = parser.parse_args()

    rows = b2b_figures(arguments.data)
    outcomes = read_outcomes(arguments.data / LOG_FILE)
    converted = sum(outcome.converted_at is not None for outcome in outcomes.values())
    print(f"{len(outcomes)} organisations, {converted} converted ({DateFigures.percent(converted, len(outcomes))})\n")
    print(format_table(rows))
    flagged, flagged_converted = distinct_pql(rows)
    print(
        f"\n{flagged} distinct organisations were PQL during their trial at one date or more;"
        f" {flagged_converted} of them converted ({DateFigures.percent(flagged_converted, flagged)})."
    )
    aucs = activity_aucs(arguments.data / LOG_FILE)
    print("\nROC AUC of plain activity counts against conversion: " + ", ".join(
        f"{name.replace('_', ' ')} {auc:.3f}" for name, auc in aucs.items()
    ))
    if arguments.list:
        as_of = datetime.fromisoformat(arguments.list)
        print(f"\nPQL organisations as of {as_of:%Y-%m-%d}:")
        for organisation, score, did_convert in flagged_organisations(arguments.data, as_of):
            print(f"  {organisation}  score {score:g}  {'converted' if did_convert else 'did not convert'}")


if __name__ == "__main__":
    main()
