"""One log record on its way to becoming an event, and the one place events are made.

A record is a first line plus its continuation lines. The parsers fill in what the
text says (program, level, uptime, message, ...); :func:`make_event` adds the event
time and the envelope fields every event shares, and bounds the text it keeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from healer.events import Event, Origin

__all__ = ["MAX_MESSAGE", "MAX_RAW", "Record", "make_event"]

MAX_RAW = 4096
MAX_MESSAGE = 2048
_LEVELS = {"ERROR", "WARN", "INFO", "DEBUG", "TRACE"}


@dataclass(slots=True)
class Record:
    """Mutable working state for one record; discarded once the event is made."""

    source: str
    offset: int
    line: int
    head: str
    payload: str
    continuation: list[str] = field(default_factory=list)
    raw: str = ""
    wall: datetime | None = None
    precise: bool = False
    zoned: bool = False  # ``wall`` has its own year and zone (see envelope._set_wall)
    header: datetime | None = None  # a zone-less header's stamp (see parse/zone.py)
    header_kind: str | None = None
    program: str | None = None
    pid: int | None = None
    thread: str | None = None
    location: str | None = None
    level: str | None = None
    uptime: float | None = None
    domain: str | None = None
    message: str = ""
    guest: bool = False  # the guest wrote it (see Origin.guest)

    def full_message(self) -> str:
        """The message with continuation lines joined by single spaces."""
        parts = [self.message, *self.continuation] if self.message else self.continuation
        return " ".join(p for p in parts if p)


def make_event(
    cls: type[Event], rec: Record, time: datetime | None, fields: dict[str, Any]
) -> Event:
    """Build the event; ``share`` is the tag, else the socket path, the record names."""
    share = fields.get("tag") or fields.get("socket")
    level = rec.level if rec.level in _LEVELS else cls.default_level
    return cls(
        time=time,
        source=rec.source,
        offset=rec.offset,
        line=rec.line,
        share=share,
        level=level,
        origin=Origin(
            program=rec.program,
            pid=rec.pid,
            thread=rec.thread,
            location=rec.location,
            uptime=rec.uptime,
            guest=rec.guest,
        ),
        message=rec.full_message()[:MAX_MESSAGE],
        raw=rec.raw[:MAX_RAW],
        **fields,
    )
