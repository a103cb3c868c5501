"""The upsignal HTTP server: the Segment tracking endpoints, live scoring and the admin API.

``create_app`` returns an ASGI application. POSTs to the tracking paths go to
``TrackingAPI`` directly. Everything else (admin API, health check, OpenAPI
spec and docs) goes to a FastAPI application. Its lifespan opens the store and
starts the ingest writer and the live scorer.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from upsignal.alerts.dispatcher import Dispatcher
from upsignal.config import ProjectConfig, ServerSettings, secret
from upsignal.errors import ConfigError
from upsignal.server.api import router as admin_router
from upsignal.server.errors import install_error_handlers
from upsignal.server.keys import active_key_sources
from upsignal.server.live import LiveScorer
from upsignal.server.openapi import add_tracking_spec
from upsignal.server.tracking import TRACKING_PATHS, Receive, Scope, Send, TrackingAPI
from upsignal.server.writer import GroupCommitWriter
from upsignal.signals.model import load_model
from upsignal.store import Store

log = logging.getLogger(__name__)


@dataclass
class ServerOptions:
    """Server configuration: the store, the model live scoring uses, and the project's server settings."""

    db: str | Path | None = None
    model: str | Path | None = None
    settings: ServerSettings = field(default_factory=ServerSettings)
    live_scoring: bool = True
    project: ProjectConfig = field(default_factory=ProjectConfig)
    deliver_alerts: bool = True


class Health(BaseModel):
    status: str
    events_stored: int
    events_pending_load: int
    live_passes: int


class UpsignalApp:
    """The ASGI application: tracking endpoints by path, the rest through FastAPI."""

    def __init__(self, options: ServerOptions):
        self.options = options
        self.tracking: TrackingAPI | None = None
        self.fastapi = _build_fastapi(self._lifespan)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and self.tracking is not None:
            endpoint = TRACKING_PATHS.get(scope["path"])
            if endpoint is not None:
                await self.tracking(scope, receive, send, endpoint)
                return
        await self.fastapi(scope, receive, send)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        options, settings = self.options, self.options.settings
        store = Store(options.db)
        if store.path != ":memory:":
            # As for file import: automatic checkpoints rewrite the messageId index, which
            # slowed the loader as the store grew. A crash replays at most this much log.
            store.conn.execute("SET checkpoint_threshold = '512MiB'")
        writer = GroupCommitWriter(store, max_unloaded_bytes=settings.ingest_backlog_mb * 1024 * 1024)
        scorer = None
        alerts = None
        try:
            if options.live_scoring:
                model, model_text = load_model(options.model)
                scorer = LiveScorer(store, model, model_text, settings.scoring_interval_seconds,
                                    alerts=options.project.alerts,
                                    full_interval=settings.full_scoring_interval_seconds)
                scorer.prepare()
            # DuckDB's worker threads run at normal priority and took CPU from the event loop during bursts.
            # One fewer than the CPUs leaves one to the event loop. On 2 CPUs, DuckDB's queries then run only in
            # the loader's and the live scorer's threads, at their lower priority. benchmarks/ingest.py measured
            # 401,412 acknowledged events/s instead of 343,539 that way, with the same rate of storing.
            store.conn.execute(f"SET threads = {settings.duckdb_threads or max(1, (os.cpu_count() or 2) - 1)}")
            keys = active_key_sources(store)
            if not keys:
                log.warning("the store has no write keys, so every tracking request gets 401;"
                            " create one with 'upsignal keys create SOURCE'")
            writer.start()
            if scorer is not None:
                scorer.start()
            alerts = _start_dispatcher(store, options) if options.deliver_alerts else None
            app.state.store = store
            app.state.writer = writer
            app.state.scorer = scorer
            app.state.admin_token_env = settings.admin_token_env
            app.state.admin_token = _admin_token(settings.admin_token_env)
            self.tracking = TrackingAPI(writer, keys, timedelta(seconds=settings.future_tolerance_seconds))
            log.info("serving store %s with %d write keys", store.path, len(keys))
            # The objects made so far (modules, models, the store) live as long as the server. Frozen, the
            # collector's full passes skip them, which it otherwise walks every few hundred requests.
            gc.freeze()
            yield
        finally:
            self.tracking = None
            if alerts is not None:
                alerts.stop()
            if scorer is not None:
                scorer.stop()
            writer.stop()
            store.close()
            log.info("stopped serving store %s", store.path)


class _DispatcherThread:
    """The alert dispatcher running in a background thread until the server stops."""

    def __init__(self, dispatcher: Dispatcher):
        self.dispatcher = dispatcher
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=dispatcher.run_forever, args=(self.stop_event,), name="upsignal-alerts")
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(timeout=60)
        self.dispatcher.close()


def _start_dispatcher(store: Store, options: ServerOptions) -> _DispatcherThread | None:
    """Deliver alerts while serving, when the project configures destinations."""
    if not any(destination.enabled for destination in options.project.alerts.destinations):
        return None
    dispatcher = Dispatcher(store, options.project)
    log.info("delivering alerts to %d destinations", len(dispatcher.destinations))
    return _DispatcherThread(dispatcher)


def create_app(options: ServerOptions | None = None) -> UpsignalApp:
    return UpsignalApp(options or ServerOptions())


def _admin_token(variable: str) -> str | None:
    try:
        return secret(variable)
    except ConfigError:
        log.warning("the admin API is disabled because %s is not set", variable)
        return None


def _version() -> str:
    try:
        return metadata.version("upsignal")
    except metadata.PackageNotFoundError:
        return "0"


def _build_fastapi(lifespan: Any) -> FastAPI:
    app = FastAPI(
        title="upsignal",
        version=_version(),
        description="Segment-compatible event ingest, live account scoring and the admin API.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(admin_router)

    # UpsignalApp hands POSTs to the tracking paths to TrackingAPI before FastAPI sees them.
    # These routes make other methods on those paths a 405, and answer a POST that
    # arrives while the server starts or stops.
    def tracking_unavailable() -> None:
        raise HTTPException(503, "the server is starting or stopping; retry the request", headers={"Retry-After": "1"})

    for path in TRACKING_PATHS:
        app.add_api_route(path, tracking_unavailable, methods=["POST"], include_in_schema=False)

    @app.get("/healthz", response_model=Health, tags=["health"])
    def health() -> dict[str, Any]:
        """Report that the server is up, the events it stored, those acknowledged but not yet stored, and its live passes."""
        scorer, writer = app.state.scorer, app.state.writer
        return {"status": "ok", "events_stored": writer.rows, "events_pending_load": writer.unloaded_rows,
                "live_passes": scorer.passes if scorer is not None else 0}

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = _without_422(add_tracking_spec(spec))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _without_422(spec: dict[str, Any]) -> dict[str, Any]:
    """Drop FastAPI's default 422 responses: validation errors are sent as 400 with the common error body."""
    for path_item in spec.get("paths", {}).values():
        for operation in path_item.values():
            operation.get("responses", {}).pop("422", None)
    schemas = spec.get("components", {}).get("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    return spec
