"""``upsignal alerts``: list, inspect, retry and deliver the alert outbox."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from upsignal.alerts.dispatcher import Dispatcher, plan_deliveries
from upsignal.alerts.outbox import STATUSES, alert_attempts, list_alerts, retry_alerts, status_counts
from upsignal.cli.app import DbOption, JsonOption, app, console, open_store, print_json, stdout
from upsignal.config import load_project
from upsignal.events.schema import utc_now

alerts_app = typer.Typer(
    help="Alerts: tier transitions waiting for, or delivered to, HubSpot, Salesforce, Slack and webhooks.",
    no_args_is_help=True,
)
app.add_typer(alerts_app, name="alerts")

ProjectOption = Annotated[
    Optional[Path],
    typer.Option("--project", envvar="UPSIGNAL_PROJECT", show_default=False,
                 help="Project file with the alerts section [default: ./upsignal.yaml]"),
]
DestinationOption = Annotated[
    Optional[str], typer.Option("--destination", "-d", help="Only this destination (its name in upsignal.yaml).")
]
LimitOption = Annotated[int, typer.Option("--limit", min=1, help="Show at most this many alerts.")]


def _alerts_table(rows: list[dict], title: str) -> Table:
    table = Table(title=title)
    for column in ("alert", "destination", "account", "transition", "status", "attempts", "when", "last error"):
        table.add_column(column, overflow="fold")
    for row in rows:
        when = row["delivered_at"] if row["status"] == "delivered" else row["next_attempt_at"]
        transition = f"{row['event']} {row['to_tier'] if row['event'] == 'entered' else row['from_tier']}"
        table.add_row(
            str(row["alert_id"]), row["destination"], row["account_id"], transition, row["status"],
            str(row["attempts"]), f"{when:%Y-%m-%d %H:%M:%S}" if when else "", row["last_error"] or "",
        )
    return table


@alerts_app.command("list")
def list_command(
    status: Annotated[Optional[str], typer.Option("--status", help=f"Only alerts in this status: {', '.join(STATUSES)}.")] = None,
    destination: DestinationOption = None,
    limit: LimitOption = 50,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """List alerts in the outbox, newest first.

    Example: upsignal alerts list --status pending --destination sales-slack
    """
    if status is not None and status not in STATUSES:
        raise typer.BadParameter(f"{status!r} is not one of {', '.join(STATUSES)}", param_hint="--status")
    with open_store(db, read_only=True) as store:
        rows = list_alerts(store, status, destination, limit)
        counts = status_counts(store)
    if json_output:
        print_json(rows)
        return
    stdout.print(_alerts_table(rows, "alerts"))
    for name, by_status in sorted(counts.items()):
        console.print(f"{name}: " + ", ".join(f"{count:,} {state}" for state, count in sorted(by_status.items())))


@alerts_app.command("dead")
def dead_command(
    destination: DestinationOption = None,
    limit: LimitOption = 50,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """List dead letters: alerts a destination rejected for good, or that failed too often, with the reason.

    Example: upsignal alerts dead --json
    """
    with open_store(db, read_only=True) as store:
        rows = list_alerts(store, "dead", destination, limit)
    if json_output:
        print_json(rows)
        return
    stdout.print(_alerts_table(rows, "dead letters"))
    if rows:
        console.print("fix the cause, then send them again with: upsignal alerts retry")


@alerts_app.command("show")
def show_command(
    alert_id: Annotated[int, typer.Argument(help="The alert id, from 'upsignal alerts list'.")],
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Show every delivery attempt of one alert.

    Example: upsignal alerts show 42
    """
    with open_store(db, read_only=True) as store:
        attempts = alert_attempts(store, alert_id)
    if json_output:
        print_json(attempts)
        return
    table = Table(title=f"attempts of alert {alert_id}")
    for column in ("attempt", "started", "outcome", "HTTP", "retry at", "error"):
        table.add_column(column, overflow="fold")
    for item in attempts:
        table.add_row(
            str(item["attempt"]), f"{item['started_at']:%Y-%m-%d %H:%M:%S}", item["outcome"],
            str(item["status_code"] or ""), f"{item['retry_at']:%H:%M:%S}" if item["retry_at"] else "",
            item["error"] or "",
        )
    stdout.print(table)


@alerts_app.command("retry")
def retry_command(
    alert_ids: Annotated[Optional[list[int]], typer.Argument(help="Alerts to retry [default: every dead letter].")] = None,
    destination: DestinationOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Queue dead or waiting alerts for delivery now, with a fresh retry budget.

    Delivered alerts are never sent again. Run 'upsignal alerts deliver' (or keep
    'upsignal serve' running) to send them.

    Example: upsignal alerts retry --destination crm && upsignal alerts deliver
    """
    with open_store(db) as store:
        changed = retry_alerts(store, utc_now(), alert_ids or (), destination)
    if json_output:
        print_json({"queued": changed})
        return
    console.print(f"queued {changed:,} alerts for delivery")


def _print_delivery(report: dict, counts: dict[str, dict[str, int]], enabled: set[str]) -> None:
    if not report:
        console.print("no enabled destinations in the project file's alerts section; nothing to deliver")
    for name, found in report.items():
        summary = ", ".join(f"{count:,} {outcome}" for outcome, count in sorted(found.items())) or "nothing due"
        waiting = counts.get(name, {}).get("pending", 0)
        console.print(f"{name}: {summary}; {waiting:,} waiting in the outbox")
    for name, by_status in sorted(counts.items()):
        if name not in enabled and by_status.get("pending"):
            console.print(
                f"{by_status['pending']:,} alerts wait for destination {name}, which is disabled or no longer in"
                " the project file; enable it, or leave them in the outbox"
            )


@alerts_app.command("deliver")
def deliver_command(
    destinations: Annotated[Optional[list[str]], typer.Option("--destination", "-d", help="Only these destinations (repeatable).")] = None,
    wait: Annotated[float, typer.Option("--wait", min=0, help="Also wait for retries due within this many seconds.")] = 0.0,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the requests that would be sent; send and change nothing.")] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, help="With --dry-run: alerts per destination to show.")] = 20,
    project: ProjectOption = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Deliver the alerts that are due, to every enabled destination in upsignal.yaml.

    Exits 1 if any alert became a dead letter in this run. Alerts that will be
    retried later stay in the outbox for the next run.

    Example: upsignal alerts deliver --dry-run --destination sales-slack
    """
    settings = load_project(project)
    if dry_run:
        with open_store(db, read_only=True) as store:
            planned = plan_deliveries(store, settings, destinations or (), limit)
        print_json({name: [request.to_dict() for request in requests] for name, requests in planned.items()})
        return
    with open_store(db) as store:
        with Dispatcher(store, settings, destinations or ()) as dispatcher:
            report = dispatcher.deliver(wait_seconds=wait)
        counts = status_counts(store)
    if json_output:
        print_json({"delivered": {name: dict(found) for name, found in report.items()}, "outbox": counts})
    else:
        _print_delivery(report, counts, {item.name for item in settings.alerts.destinations if item.enabled})
    if any(found.get("dead") for found in report.values()):
        raise typer.Exit(1)
