"""Open the DuckDB store, apply migrations and run statements in transactions."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb

from upsignal.errors import StoreError

log = logging.getLogger(__name__)

DEFAULT_PATH = Path("upsignal.duckdb")
DB_ENV_VAR = "UPSIGNAL_DB"
INGEST_LOG_SUFFIX = ".ingest"


def resolve_path(path: str | os.PathLike[str] | None = None) -> str:
    """Return the store path: the argument, else ``$UPSIGNAL_DB``, else ./upsignal.duckdb."""
    if path is not None:
        return str(path)
    return os.environ.get(DB_ENV_VAR) or str(DEFAULT_PATH)


def ingest_log_dir(path: str) -> Path | None:
    """Return the folder of the ingest server's log for a store file, or None for an in-memory store."""
    if path.startswith(":memory:"):
        return None
    return Path(path + INGEST_LOG_SUFFIX)


def _has_ingest_log(path: str) -> bool:
    directory = ingest_log_dir(path)
    return directory is not None and directory.is_dir() and any(directory.iterdir())


def _migrations() -> list[tuple[int, str, str]]:
    """List the bundled migrations as (version, name, sql), oldest first.

    Each file in ``upsignal/store/migrations`` is named ``vNNN_name.sql``; a
    subsystem adds its tables by adding the next numbered file.
    """
    found = []
    for entry in resources.files("upsignal.store.migrations").iterdir():
        if entry.name.startswith("v") and entry.name.endswith(".sql"):
            version = int(entry.name[1:4])
            found.append((version, entry.name[5:-4], entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [version for version, _, _ in found]
    if len(set(versions)) != len(versions):
        raise StoreError(f"two migration files share a version number: {versions}")
    return found


class Store:
    """A connection to one DuckDB store file, migrated to the current schema.

    ``":memory:"`` gives a private in-memory store (tests). The store is
    single-writer: DuckDB locks the file, so a second process gets StoreError.
    Every open first loads events that ``upsignal serve`` acknowledged but had
    not yet stored when it stopped (its ingest log, ``<path>.ingest/``).
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, read_only: bool = False):
        self.path = resolve_path(path)
        if read_only and _has_ingest_log(self.path):
            # Loading the log needs a writable open; the read-only one follows it.
            Store(self.path).close()
        try:
            self.conn = duckdb.connect(self.path, read_only=read_only)
        except duckdb.IOException as error:
            hint = ""
            if "lock" in str(error).lower():
                hint = (
                    "; another process has it open for writing (an 'upsignal serve' or a running"
                    " import): stop it, or send events through its HTTP API"
                )
            raise StoreError(f"cannot open store {self.path}: {error}{hint}") from error
        self.conn.execute("SET TimeZone = 'UTC'")
        # Imported here because identity imports the store.
        from upsignal.identity.domains import register_functions
        from upsignal.identity.resolve import register_merge_traits

        register_functions(self.conn)
        register_merge_traits(self.conn)
        if not read_only:
            self.migrate()
            if _has_ingest_log(self.path):
                from upsignal.server.loader import recover_ingest_log  # imported only when there is a log

                try:
                    recover_ingest_log(self)
                except BaseException:
                    self.conn.close()
                    raise
        self._check_version()

    # -- schema ---------------------------------------------------------------

    def schema_version(self) -> int:
        exists = self.conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
        ).fetchone()[0]
        if not exists:
            return 0
        return self.conn.execute("SELECT max(version) FROM schema_version").fetchone()[0] or 0

    def migrate(self) -> int:
        """Apply every migration newer than the store's version; return the new version."""
        current = self.schema_version()
        pending = [m for m in _migrations() if m[0] > current]
        for version, name, sql in pending:
            log.info("applying store migration %03d_%s to %s", version, name, self.path)
            with self.transaction():
                self.conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version"
                    " (version INTEGER PRIMARY KEY, name VARCHAR, applied_at TIMESTAMP)"
                )
                self.conn.execute(sql)
                self.conn.execute(
                    "INSERT INTO schema_version VALUES (?, ?, now()::TIMESTAMP)", [version, name]
                )
        return self.schema_version()

    def _check_version(self) -> None:
        known = max((version for version, _, _ in _migrations()), default=0)
        found = self.schema_version()
        if found > known:
            raise StoreError(
                f"store {self.path} has schema version {found}, newer than this upsignal"
                f" understands ({known}); upgrade upsignal"
            )

    # -- statements -------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Run the block in one transaction: all of it is stored, or none."""
        self.conn.execute("BEGIN TRANSACTION")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def rows(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Run a query and return its rows as dicts."""
        cursor = self.conn.execute(sql, params or [])
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def scalar(self, sql: str, params: list[Any] | None = None) -> Any:
        row = self.conn.execute(sql, params or []).fetchone()
        return None if row is None else row[0]

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
