"""healer: an event-sourced watchdog for virtio-fs shares.

The names below are loaded on first use, so that ``import healer.holder`` (the small
long-lived process that keeps the data path) does not pull in the parsers.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_LAZY = {
    "KINDS": "healer.events",
    "Event": "healer.events",
    "event_from_json": "healer.events",
    "event_to_json": "healer.events",
    "from_dict": "healer.events",
    "to_dict": "healer.events",
    "ParseStats": "healer.parse",
    "SourceParser": "healer.parse",
    "Unrecognized": "healer.parse",
}

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

if TYPE_CHECKING:
    from healer.events import KINDS, Event, event_from_json, event_to_json, from_dict, to_dict
    from healer.parse import ParseStats, SourceParser, Unrecognized


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'healer' has no attribute {name!r}"
        raise AttributeError(msg)
    return getattr(import_module(module), name)
