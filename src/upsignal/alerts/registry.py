"""Find destination classes: entry points in the ``upsignal.destinations`` group, or ``module:Class``.

The built-in destinations are entry points of the upsignal distribution
itself (see pyproject.toml), found the same way as any other package's.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

from upsignal.alerts.destination import Destination
from upsignal.config import DestinationSettings
from upsignal.errors import ConfigError

ENTRY_POINT_GROUP = "upsignal.destinations"


def installed_types() -> list[str]:
    """Names of the destination types registered as entry points."""
    return sorted(point.name for point in entry_points(group=ENTRY_POINT_GROUP))


def destination_class(kind: str) -> type[Destination]:
    """Load the class for a destination type; ConfigError if it is not installed or not a Destination."""
    if ":" in kind:
        module_name, _, attribute = kind.partition(":")
        try:
            found = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as error:
            raise ConfigError(f"destination type {kind!r} cannot be imported: {error}") from None
    else:
        points = [point for point in entry_points(group=ENTRY_POINT_GROUP) if point.name == kind]
        if not points:
            raise ConfigError(
                f"no destination type {kind!r} is installed (installed: {', '.join(installed_types()) or 'none'});"
                " install the package that provides it, or reinstall upsignal if a built-in type is missing"
            )
        found = points[0].load()
    if not (isinstance(found, type) and issubclass(found, Destination)):
        raise ConfigError(f"destination type {kind!r} is not a subclass of upsignal.alerts.Destination")
    return found


def create_destination(settings: DestinationSettings, dry_run: bool = False) -> Destination:
    """Instantiate the destination configured by ``settings``."""
    return destination_class(settings.type)(settings, dry_run=dry_run)
