"""Exceptions raised by the upsignal library.

    UpsignalError
    ├── ConfigError          a project or environment setting is invalid
    ├── ModelError           the scoring model YAML is invalid
    ├── InvalidEventError    one event failed validation (carries field and value)
    ├── ImportFileError      an input file cannot be read at all
    ├── StoreError           the DuckDB store is missing, locked or from a newer version
    └── NotFoundError        an account, user or run does not exist

The CLI maps every UpsignalError to exit code 1 and prints its message; the HTTP
server maps them to the canonical JSON error shape.
"""

from __future__ import annotations

import reprlib

# reprlib stops at a fixed depth, where repr() of a value nested about 1,000 levels deep (which JSON
# parsers accept) raises RecursionError.
_short = reprlib.Repr()
_short.maxlevel = 3
_short.maxstring = 80
_short.maxother = 80


def shown_value(value: object, width: int = 80) -> str:
    """Return a repr of a value from the input for an error message, at most ``width`` characters."""
    text = _short.repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


class UpsignalError(Exception):
    """Base class of every error that upsignal raises on purpose."""


class ConfigError(UpsignalError):
    """A project or environment setting is invalid."""


class ModelError(UpsignalError):
    """The scoring model is invalid: the message names the path in the YAML."""


class InvalidEventError(UpsignalError):
    """One event failed validation.

    ``field`` is the dotted path of the offending field (``""`` for the whole
    record) and ``value`` a short repr of what was found.
    """

    def __init__(self, message: str, field: str = "", value: object = None):
        super().__init__(message)
        self.field = field
        self.value = value


class ImportFileError(UpsignalError):
    """An input file or mapping cannot be read at all (missing, wrong format)."""


class StoreError(UpsignalError):
    """The store cannot be opened or migrated."""


class NotFoundError(UpsignalError):
    """An account, user, key or run that was asked for does not exist."""
