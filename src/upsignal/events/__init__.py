"""Events: the Segment message schema, validation, and importers."""

from upsignal.events.importers import ImportReport, import_file
from upsignal.events.schema import MAX_EVENT_BYTES, Message, parse_message
from upsignal.events.writer import EventWriter

__all__ = ["MAX_EVENT_BYTES", "EventWriter", "ImportReport", "Message", "import_file", "parse_message"]
