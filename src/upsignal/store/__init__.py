"""The embedded DuckDB store: one file with events, accounts and score history."""

from upsignal.store.database import DEFAULT_PATH, Store, resolve_path

__all__ = ["DEFAULT_PATH", "Store", "resolve_path"]
