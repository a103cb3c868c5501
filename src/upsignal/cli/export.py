"""``upsignal export``: copy the store's data out for other engines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from upsignal.cli.app import DbOption, JsonOption, app, console, open_store, print_json
from upsignal.signals.engines.lake import export_events

export_app = typer.Typer(help="Copy the store's data out, e.g. events to Parquet for the Spark engine.", no_args_is_help=True)
app.add_typer(export_app, name="export")


@export_app.command("events")
def events_command(
    parquet: Annotated[Path, typer.Option("--parquet", help="Folder to write, one date=YYYY-MM-DD folder per UTC day.")],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete the folder's contents first.")] = False,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Write the store's events as Parquet partitioned by date, for --engine spark.

    Example: upsignal export events --parquet lake/events && upsignal score --engine spark --events lake/events
    """
    if parquet.exists() and not parquet.is_dir():
        raise typer.BadParameter(f"{parquet} is a file; name a folder", param_hint="--parquet")
    if parquet.is_dir() and any(parquet.iterdir()) and not overwrite:
        raise typer.BadParameter(
            f"{parquet} is not empty; pass --overwrite to replace its contents", param_hint="--parquet"
        )
    with open_store(db, read_only=True) as store:
        result = export_events(store, parquet, overwrite)
    if json_output:
        print_json({"directory": result.directory, "events": result.events, "partitions": result.partitions,
                    "seconds": round(result.seconds, 3)})
        return
    console.print(
        f"wrote {result.events:,} events in {result.partitions:,} date partitions to {result.directory}"
        f" in {result.seconds:.2f} s"
    )
