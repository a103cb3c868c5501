"""Write keys: created, listed and revoked in the store, which keeps only their SHA-256 hashes.

A write key authenticates an event source to the ingest API, as in Segment, and
names the source that every event sent with it is stored under. Keys are long
random tokens, so a plain SHA-256 hash is enough to keep them unrecoverable
from the store while leaving each lookup a single dictionary access.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

from upsignal.errors import NotFoundError, UpsignalError
from upsignal.events.schema import utc_now
from upsignal.store import Store

KEY_PREFIX = "usk_"
SOURCE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")


@dataclass
class WriteKey:
    key_id: str
    source: str
    key_prefix: str
    created_at: datetime
    revoked_at: datetime | None


def hash_key(key: str) -> str:
    """Return the hex SHA-256 of a write key, as stored."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def create_key(store: Store, source: str) -> tuple[WriteKey, str]:
    """Create a write key for a source; return its record and the key, which is not stored."""
    if not SOURCE_PATTERN.match(source):
        raise UpsignalError(
            f"source {source!r} is invalid: use 1-100 letters, digits, '_', '.', ':' or '-',"
            " starting with a letter or digit"
        )
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = WriteKey(
        key_id="key_" + secrets.token_hex(6),
        source=source,
        key_prefix=key[: len(KEY_PREFIX) + 6],
        created_at=utc_now(),
        revoked_at=None,
    )
    store.conn.execute(
        "INSERT INTO write_keys VALUES (?, ?, ?, ?, ?, NULL)",
        [record.key_id, record.source, hash_key(key), record.key_prefix, record.created_at],
    )
    return record, key


def list_keys(store: Store, include_revoked: bool = True) -> list[WriteKey]:
    """List write keys, oldest first."""
    sql = "SELECT key_id, source, key_prefix, created_at, revoked_at FROM write_keys"
    if not include_revoked:
        sql += " WHERE revoked_at IS NULL"
    return [WriteKey(**row) for row in store.rows(sql + " ORDER BY created_at, key_id")]


def revoke_key(store: Store, key_id: str) -> WriteKey:
    """Revoke a key by its id, so the ingest API rejects it from the next server start."""
    rows = store.rows(
        "SELECT key_id, source, key_prefix, created_at, revoked_at FROM write_keys WHERE key_id = ?",
        [key_id],
    )
    if not rows:
        raise NotFoundError(f"write key {key_id!r} not found; list the key ids with 'upsignal keys list'")
    record = WriteKey(**rows[0])
    if record.revoked_at is None:
        record.revoked_at = utc_now()
        store.conn.execute("UPDATE write_keys SET revoked_at = ? WHERE key_id = ?", [record.revoked_at, key_id])
    return record


def active_key_sources(store: Store) -> dict[str, str]:
    """Map the hash of every unrevoked key to its source name."""
    rows = store.rows("SELECT key_hash, source FROM write_keys WHERE revoked_at IS NULL")
    return {row["key_hash"]: row["source"] for row in rows}
