"""``upsignal serve``: the ingest API, live scoring and the admin API over HTTP."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from upsignal.cli.app import DbOption, app
from upsignal.config import load_project

SWITCH_INTERVAL_SECONDS = 0.0005


@app.command()
def serve(
    host: Annotated[Optional[str], typer.Option("--host", help="Address to listen on [default: server.host, 127.0.0.1]", show_default=False)] = None,
    port: Annotated[Optional[int], typer.Option("--port", min=1, max=65535, help="TCP port [default: server.port, 8080]", show_default=False)] = None,
    model: Annotated[Optional[Path], typer.Option("--model", "-m", help="Model YAML for live scoring [default: the project's model, else the shipped default]", show_default=False)] = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Server processes. Only 1 is supported: DuckDB lets one process write the store.")] = 1,
    no_live_scoring: Annotated[bool, typer.Option("--no-live-scoring", help="Store events without re-scoring touched accounts.")] = False,
    db: DbOption = None,
) -> None:
    """Serve the Segment tracking API (POST /v1/track, /v1/batch, ...), live scoring and the admin API.

    A request is acknowledged once its events are synced to the ingest log next to
    the store, which the server loads into the store behind it. With destinations
    in upsignal.yaml's alerts section, PQL alerts are delivered while it runs.
    Stop with Ctrl-C.

    Example: UPSIGNAL_ADMIN_TOKEN=secret upsignal serve --port 8080
    """
    import uvicorn

    from upsignal.server import ServerOptions, create_app

    if workers != 1:
        raise typer.BadParameter(
            "only 1 worker is supported: DuckDB allows a single process to write the store file,"
            " so further processes could only parse requests and hand them to it",
            param_hint="--workers",
        )
    # The ingest writer thread needs the GIL briefly and often while the event loop parses requests.
    # A 0.5 ms switch interval instead of 5 ms stored about 50% more events/s in benchmarks/ingest.py.
    sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)
    project = load_project()
    settings = project.server
    options = ServerOptions(
        db=db or project.db, model=model or project.model, settings=settings, live_scoring=not no_live_scoring,
        project=project,
    )
    uvicorn.run(
        create_app(options), host=host or settings.host, port=port or settings.port,
        log_level="info", access_log=False, lifespan="on",
    )
