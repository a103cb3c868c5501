"""The main job's commands: init, import, score, accounts, users, explain, sql, stats."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from upsignal.cli.app import (
    DbOption,
    JsonOption,
    app,
    console,
    model_path,
    open_store,
    parse_time,
    print_json,
    stdout,
)
from upsignal.errors import ConfigError
from upsignal.events.importers import import_file
from upsignal.events.schema import utc_now
from upsignal.events.mapping import load_mapping
from upsignal.identity import resolve_accounts
from upsignal.scoring import explain_account, score_accounts
from upsignal.scoring.explain import Explanation, list_explanations
from upsignal.signals import compile_scoring_query, load_model
from upsignal.signals.engines.factory import open_engine, open_spark_engine
from upsignal.signals.model import DEFAULT_MODEL_FILE, default_model_text

ModelOption = Annotated[
    Optional[Path],
    typer.Option("--model", "-m", help=f"Model YAML [default: ./{DEFAULT_MODEL_FILE}, else the shipped default]", show_default=False),
]


@app.command()
def init(
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing model file.")] = False,
) -> None:
    """Write the default scoring model to ./upsignal.model.yaml to edit.

    Example: upsignal init && $EDITOR upsignal.model.yaml
    """
    target = Path(DEFAULT_MODEL_FILE)
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists; pass --force to overwrite it")
    target.write_text(default_model_text(), encoding="utf-8")
    console.print(f"wrote {target}")


@app.command("import")
def import_command(
    files: Annotated[list[Path], typer.Argument(help="Files to import: JSON lines, CSV, TSV or Parquet.")],
    file_format: Annotated[Optional[str], typer.Option("--format", help="jsonl, csv, tsv or parquet [default: from the extension]", show_default=False)] = None,
    mapping: Annotated[Optional[Path], typer.Option("--mapping", help="YAML mapping of source columns to Segment fields.")] = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Import events, then resolve users into accounts.

    Bad records are reported with their line, field and value; the rest import.
    Re-importing a file stores nothing twice. Every file is checked (it exists,
    its format is known, the mapping's columns are in it) before any is imported.

    Example: upsignal import events.jsonl
    """
    from upsignal.events.importers import FORMATS, check_files
    from upsignal.events.writer import query_interrupts_raised

    if file_format is not None and file_format not in FORMATS:
        raise typer.BadParameter(f"{file_format!r} is not one of {', '.join(FORMATS)}", param_hint="--format")
    loaded_mapping = load_mapping(mapping) if mapping else None
    check_files(files, file_format, loaded_mapping)
    reports = []
    try:
        with query_interrupts_raised(), open_store(db) as store:
            for path in files:
                with _progress() as progress:
                    task = progress.add_task(f"importing {path.name}", total=None)
                    report = import_file(
                        store, path, file_format, loaded_mapping,
                        progress=lambda done, total: progress.update(task, completed=done, total=total),
                    )
                reports.append(report)
            counts = resolve_accounts(store)
    except KeyboardInterrupt:
        console.print("import interrupted; re-run it to continue: already stored events are skipped", highlight=False)
        raise typer.Exit(1) from None
    failed = sum(report.rejected for report in reports)
    if json_output:
        print_json({
            "files": [
                {"path": r.path, "imported": r.imported, "rejected": r.rejected, "duplicates": r.duplicates,
                 "errors": [{"line": e.line, "field": e.field, "message": e.message} for e in r.errors]}
                for r in reports
            ],
            **counts,
        })
    else:
        for report in reports:
            console.print(
                f"{report.path}: {report.imported:,} imported, {report.rejected:,} rejected,"
                f" {report.duplicates:,} duplicates"
            )
            for error in report.errors[:20]:
                console.print(f"  rejected {error}", highlight=False, markup=False)
            if report.rejected > 20:
                console.print(f"  ... and {report.rejected - 20:,} more rejected (use --json to list up to 1,000)")
        console.print(f"{counts['users']:,} users in {counts['accounts']:,} accounts")
    if failed and not any(report.imported for report in reports):
        raise typer.Exit(1)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(),
        console=console, transient=True,
    )


class EngineName(str, Enum):
    duckdb = "duckdb"
    spark = "spark"


EngineOption = Annotated[
    EngineName, typer.Option("--engine", help="Where signals run: duckdb (in the store) or spark.")
]
EventsOption = Annotated[
    Optional[str],
    typer.Option("--events", help="Spark engine: Parquet folder or glob, or table name [default: spark.events in upsignal.yaml]", show_default=False),
]
SparkConfOption = Annotated[
    Optional[list[str]],
    typer.Option("--spark-conf", metavar="KEY=VALUE", help="Spark setting, repeatable; overrides spark.conf in upsignal.yaml."),
]
ParquetOption = Annotated[
    Optional[Path],
    typer.Option("--parquet", help="Spark engine: write scores, accounts and users under this new folder, not the store.", show_default=False),
]


@app.command()
def score(
    as_of: Annotated[Optional[str], typer.Option("--as-of", help="Score as of this ISO 8601 time [default: now]", show_default=False)] = None,
    model: ModelOption = None,
    db: DbOption = None,
    engine: EngineOption = EngineName.duckdb,
    events: EventsOption = None,
    spark_conf: SparkConfOption = None,
    parquet: ParquetOption = None,
    json_output: JsonOption = False,
) -> None:
    """Score every account as of a time and store the snapshot.

    With --engine spark, identity resolution and scoring run in Spark on
    events in Parquet or a Spark table; only per-account results return.

    Example: upsignal score --as-of 2024-03-01T00:00:00Z

    Example: upsignal score --engine spark --events 's3a://lake/events/' --spark-conf spark.executor.memory=8g
    """
    moment = parse_time(as_of)
    scoring_model, text = load_model(model_path(model))
    if engine == EngineName.duckdb and (events or spark_conf):
        raise typer.BadParameter("needs --engine spark; the duckdb engine reads the store's events", param_hint="--events/--spark-conf")
    if parquet is not None:
        if engine != EngineName.spark:
            raise typer.BadParameter("writing Parquet needs --engine spark", param_hint="--parquet")
        with open_spark_engine(None, events, spark_conf) as spark_engine:
            spark_engine.write_parquet(scoring_model, moment or utc_now(), str(parquet))
        console.print(f"wrote scores, accounts and users under {parquet}")
        return
    # The Spark engine reads events from the lake, so it may score into a new store.
    must_exist = engine == EngineName.duckdb
    with open_store(db, must_exist=must_exist) as store, open_engine(engine.value, store, events, spark_conf) as chosen:
        with console.status("scoring accounts"):
            run = score_accounts(store, scoring_model, text, moment, chosen)
        tiers = store.rows(
            "SELECT tier, count(*) AS accounts FROM account_scores WHERE run_id = ? GROUP BY tier", [run.run_id]
        )
    counts = {row["tier"]: row["accounts"] for row in tiers}
    if json_output:
        print_json({"run_id": run.run_id, "as_of": run.as_of, "model_version": run.model_version,
                    "accounts": run.accounts, "transitions": run.transitions, "tiers": counts,
                    "seconds": round(run.seconds, 3)})
        return
    by_tier = ", ".join(f"{counts.get(t.name, 0):,} {t.name}" for t in reversed(scoring_model.tiers))
    console.print(
        f"run {run.run_id}: scored {run.accounts:,} accounts as of {run.as_of.isoformat()}Z"
        f" with model {scoring_model.name} ({run.model_version}) in {run.seconds:.2f} s: {by_tier};"
        f" {run.transitions:,} tier changes"
    )


def _account_json(item: Explanation) -> dict:
    return {
        "account_id": item.account_id, "domain": item.domain, "name": item.name,
        "score": item.score, "tier": item.tier, "tier_since": item.tier_since,
        "as_of": item.as_of, "previous_score": item.previous_score,
        "signals": item.signals, "reasons": item.reasons,
    }


@app.command()
def accounts(
    tier: Annotated[Optional[str], typer.Option("--tier", help="Only accounts in this tier, e.g. pql.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most this many accounts.")] = 20,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """List scored accounts, highest score first, with the reasons for each.

    Example: upsignal accounts --tier pql --json
    """
    with open_store(db, read_only=True) as store:
        items = list_explanations(store, tier, limit)
        known_tiers = [row["tier"] for row in store.rows("SELECT DISTINCT tier FROM account_state ORDER BY tier")]
    if tier and tier not in known_tiers:
        console.print(f"no account is in tier {tier!r}; tiers in the store: {', '.join(known_tiers) or 'none (run upsignal score)'}")
    if json_output:
        print_json([_account_json(item) for item in items])
        return
    table = Table(title=f"accounts{f' in tier {tier}' if tier else ''}")
    for column in ("account", "name", "score", "tier", "reasons"):
        table.add_column(column, overflow="fold")
    for item in items:
        table.add_row(item.account_id, item.name or "", f"{item.score:g}", item.tier, "\n".join(item.reasons[:4]))
    stdout.print(table)


@app.command()
def users(
    account: Annotated[Optional[str], typer.Option("--account", help="Only users of this account.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Show at most this many users.")] = 100,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """List resolved users and the account each one joined.

    Example: upsignal users --account acme.com --json
    """
    sql = "SELECT user_id, email, name, account_id, joined_by, first_seen, last_seen FROM users"
    params = []
    if account:
        sql, params = sql + " WHERE account_id = ?", [account]
    with open_store(db, read_only=True) as store:
        rows = store.rows(sql + f" ORDER BY account_id, user_id LIMIT {limit}", params)
    if json_output:
        print_json(rows)
        return
    table = Table(title="users")
    for column in ("user_id", "email", "account_id", "joined_by"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["user_id"], row["email"] or "", row["account_id"], row["joined_by"])
    stdout.print(table)


@app.command()
def explain(
    account_id: Annotated[str, typer.Argument(help="The account to explain.")],
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Explain an account's score: each rule that fired, its signal value, threshold and points.

    Example: upsignal explain acme.com
    """
    with open_store(db, read_only=True) as store:
        item = explain_account(store, account_id)
    if json_output:
        print_json(item.to_dict())
        return
    change = "" if item.previous_score is None else f" (previous run: {item.previous_score:g})"
    stdout.print(f"[bold]{item.name or item.account_id}[/bold] ({item.account_id})")
    stdout.print(f"score {item.score:g}{change}, tier {item.tier} since {item.tier_since}, as of {item.as_of}, model {item.model_version}")
    table = Table()
    for column in ("rule", "value", "threshold", "points", "reason"):
        table.add_column(column, overflow="fold")
    for contribution in item.contributions:
        value = "" if contribution.value is None else f"{contribution.value:g}"
        threshold = "" if contribution.threshold is None else f">= {contribution.threshold:g}"
        table.add_row(contribution.rule, value, threshold, f"{contribution.points:g}", contribution.sentence)
    stdout.print(table)


@app.command()
def sql(
    dialect: Annotated[str, typer.Option("--dialect", help="duckdb, spark, snowflake, bigquery, postgres or any SQLGlot dialect.")] = "duckdb",
    as_of: Annotated[Optional[str], typer.Option("--as-of", help="ISO 8601 as-of time [default: now]", show_default=False)] = None,
    model: ModelOption = None,
) -> None:
    """Print the model's scoring query for a warehouse.

    It reads tables events, user_keys and accounts with upsignal's schema.

    Example: upsignal sql --dialect snowflake --as-of 2024-03-01
    """
    import sqlglot

    from upsignal.events.schema import utc_now

    if dialect not in sqlglot.dialects.DIALECTS and dialect.lower() not in [d.lower() for d in sqlglot.dialects.DIALECTS]:
        raise typer.BadParameter(f"unknown dialect {dialect!r}", param_hint="--dialect")
    scoring_model, _ = load_model(model_path(model))
    sys_out = compile_scoring_query(scoring_model, parse_time(as_of) or utc_now(), dialect.lower())
    typer.echo(sys_out)


@app.command()
def stats(db: DbOption = None, json_output: JsonOption = False) -> None:
    """Print counts of stored events, users and accounts, and of rejected and duplicate messages.

    Example: upsignal stats --json
    """
    with open_store(db, read_only=True) as store:
        counters = {row["name"]: row["value"] for row in store.rows("SELECT name, value FROM ingest_counters")}
        figures = {
            "events": store.scalar("SELECT count(*) FROM events"),
            "users": store.scalar("SELECT count(*) FROM users"),
            "accounts": store.scalar("SELECT count(*) FROM accounts"),
            "rejected": counters.get("rejected", 0),
            "duplicates": counters.get("duplicates", 0),
        }
    if json_output:
        print_json(figures)
        return
    for name, value in figures.items():
        stdout.print(f"{name:>10}: {value:,}")


@app.command()
def schema(
    kind: Annotated[str, typer.Argument(help="model (the scoring model YAML) or project (upsignal.yaml).")],
) -> None:
    """Print the JSON Schema of the model file or the project file, for editors and CI checks.

    Example: upsignal schema model > model.schema.json
    """
    from upsignal.config import ProjectConfig
    from upsignal.signals.model import model_json_schema

    if kind not in ("model", "project"):
        raise typer.BadParameter(f"{kind!r} is not one of model, project", param_hint="KIND")
    document = model_json_schema() if kind == "model" else ProjectConfig.model_json_schema()
    print_json(document)
