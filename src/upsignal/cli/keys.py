"""``upsignal keys``: create, list and revoke the write keys of the ingest API."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from upsignal.cli.app import DbOption, JsonOption, app, console, open_store, print_json, stdout
from upsignal.server.keys import create_key, list_keys, revoke_key

keys_app = typer.Typer(
    help="Create, list and revoke write keys for the ingest API. The store keeps only their hashes.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")


@keys_app.command("create")
def create(
    source: Annotated[str, typer.Argument(help="Name of the event source, stored with every event sent with the key.")],
    db: DbOption = None,
) -> None:
    """Create a write key and print it alone on standard output; it cannot be shown again.

    A running server reads keys when it starts, so restart it to accept a new key.

    Example: upsignal keys create web-app
    """
    with open_store(db) as store:
        record, key = create_key(store, source)
    console.print(f"created write key {record.key_id} for source {record.source}; store it now, it is not shown again")
    typer.echo(key)


@keys_app.command("list")
def list_command(db: DbOption = None, json_output: JsonOption = False) -> None:
    """List write keys with their ids, sources and the first characters of each key.

    Example: upsignal keys list --json
    """
    with open_store(db, read_only=True) as store:
        records = list_keys(store)
    if json_output:
        print_json([record.__dict__ for record in records])
        return
    table = Table(title="write keys")
    for column in ("key_id", "source", "key starts with", "created_at", "revoked_at"):
        table.add_column(column)
    for record in records:
        table.add_row(record.key_id, record.source, record.key_prefix, f"{record.created_at:%Y-%m-%d %H:%M}Z",
                      f"{record.revoked_at:%Y-%m-%d %H:%M}Z" if record.revoked_at else "")
    stdout.print(table)


@keys_app.command("revoke")
def revoke(
    key_id: Annotated[str, typer.Argument(help="The key's id, as 'upsignal keys list' shows it.")],
    db: DbOption = None,
) -> None:
    """Revoke a write key; a running server rejects it after its next start.

    Example: upsignal keys revoke key_3f9a1c2b7d10
    """
    with open_store(db) as store:
        record = revoke_key(store, key_id)
    console.print(f"revoked write key {record.key_id} of source {record.source}")
