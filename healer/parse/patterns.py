"""The shape every program parser shares: ordered (regex, builder) pairs.

A builder gets the record and the match and returns the event class and its
kind-specific fields, or ``None`` to let later patterns try.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable
from typing import Any, TypeAlias

from healer.events import Event
from healer.parse.record import Record
from healer.rusterror import parse_error

__all__ = ["Builder", "Built", "Pattern", "error_fields", "signal_name"]

Built: TypeAlias = tuple[type[Event], dict[str, Any]] | None
Builder: TypeAlias = Callable[[Record, "re.Match[str]"], Built]
Pattern: TypeAlias = tuple["re.Pattern[str]", Builder]


def error_fields(text: str) -> dict[str, Any]:
    """``chain``, ``error_kind`` and ``errno`` read from a Debug error text."""
    detail = parse_error(text)
    return {"chain": detail.chain, "error_kind": detail.error_kind, "errno": detail.errno}


def signal_name(number: int) -> str | None:
    """``SIGSEGV`` for 11; None for a number that names no signal here."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return None
