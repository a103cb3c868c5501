"""Alerts: tier transitions, the outbox, the dispatcher and the destinations.

Importing ``upsignal.alerts`` loads only the destination interface. The
dispatcher and the outbox functions load on first use, because scoring
imports this package and the dispatcher imports scoring.
"""

from __future__ import annotations

import importlib
from typing import Any

from upsignal.alerts.destination import Delivered, Destination, Failed, Outcome, PlannedRequest, Retry

_LAZY = {
    "Alert": "upsignal.alerts.context",
    "Dispatcher": "upsignal.alerts.dispatcher",
    "plan_deliveries": "upsignal.alerts.dispatcher",
    "list_alerts": "upsignal.alerts.outbox",
    "retry_alerts": "upsignal.alerts.outbox",
}

__all__ = ["Alert", "Delivered", "Destination", "Dispatcher", "Failed", "Outcome", "PlannedRequest", "Retry",
           "list_alerts", "plan_deliveries", "retry_alerts"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'upsignal.alerts' has no attribute {name!r}")
