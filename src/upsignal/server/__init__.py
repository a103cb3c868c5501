"""The HTTP server: Segment-compatible ingest, live scoring and the admin API."""

from upsignal.server.app import ServerOptions, create_app

__all__ = ["ServerOptions", "create_app"]
