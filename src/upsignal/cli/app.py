"""The Typer application, shared options and error handling."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from upsignal.config import load_project
from upsignal.errors import StoreError, UpsignalError
from upsignal.store import Store, resolve_path

app = typer.Typer(
    name="upsignal",
    help="Find product-qualified leads in product usage events and tell sales why.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
stdout = Console()

DbOption = Annotated[
    Path | None,
    typer.Option("--db", envvar="UPSIGNAL_DB", help="DuckDB store file [default: ./upsignal.duckdb]", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of a table.")]


@app.callback()
def configure(
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="Log INFO (-v) or DEBUG (-vv) to stderr.")] = 0,
) -> None:
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def open_store(db: Path | None, read_only: bool = False, must_exist: bool | None = None) -> Store:
    """Open the store named by --db or $UPSIGNAL_DB, else by upsignal.yaml's ``db``, else ./upsignal.duckdb.

    Commands that only read (and ``must_exist``, default: ``read_only``) refuse
    to create a new empty store, so a mistyped path fails instead of showing nothing.
    """
    path = resolve_path(db if db is not None else load_project().db)
    if must_exist is None:
        must_exist = read_only
    if must_exist and path != ":memory:" and not Path(path).exists():
        raise StoreError(f"store not found: {path}; import events first with 'upsignal import', or pass --db")
    return Store(path, read_only=read_only)


def model_path(model: Path | None) -> Path | str | None:
    """Return the model file named by --model, else by upsignal.yaml's ``model`` (None: the default lookup)."""
    return model if model is not None else load_project().model


def parse_time(text: str | None, option: str = "--as-of") -> datetime | None:
    """Parse an ISO 8601 time option into naive UTC (naive input is taken as UTC)."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an ISO 8601 time such as 2024-03-01T12:00:00Z", param_hint=option) from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, default=_json_default, ensure_ascii=False) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat() + ("Z" if value.tzinfo is None else "")
    raise TypeError(f"cannot serialise {type(value).__name__}")


def run_app(args: list[str] | None = None) -> int:
    """Run the CLI and map errors to exit codes: UpsignalError to 1, usage errors to 2."""
    try:
        app(args=args, prog_name="upsignal")
    except SystemExit as done:
        if done.code is None:
            return 0
        return done.code if isinstance(done.code, int) else 1
    except UpsignalError as error:
        console.print(f"[red]error:[/red] {escape(str(error))}", highlight=False)
        return 1
    return 0
