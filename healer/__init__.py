"""healer: an event-sourced watchdog for virtio-fs shares."""

from healer.events import KINDS, Event, event_from_json, event_to_json, from_dict, to_dict
from healer.parse import ParseStats, SourceParser, Unrecognized

__version__ = "0.1.0"

__all__ = [
    "KINDS",
    "Event",
    "ParseStats",
    "SourceParser",
    "Unrecognized",
    "__version__",
    "event_from_json",
    "event_to_json",
    "from_dict",
    "to_dict",
]
