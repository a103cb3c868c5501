"""The ``upsignal`` command: a thin shell over the library.

Exit codes: 0 success, 1 failure (any UpsignalError), 2 usage error.
Each feature's commands live in their own module and register on ``app``.
"""

from __future__ import annotations

import sys

from upsignal.cli.app import app, run_app
from upsignal.cli import core  # noqa: F401  (registers commands)
from upsignal.cli import export  # noqa: F401  (registers commands)
from upsignal.cli import keys, serve  # noqa: F401  (registers commands)
from upsignal.cli import alerts  # noqa: F401  (registers commands)


def main() -> None:
    sys.exit(run_app())


__all__ = ["app", "main"]
