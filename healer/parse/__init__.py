"""Parsers: raw log lines in, typed events out. Pure; no I/O."""

from healer.parse.stream import (
    Checkpoint,
    ClockNote,
    Parsed,
    ParseStats,
    Repeat,
    SourceParser,
    Unrecognized,
)

__all__ = [
    "Checkpoint",
    "ClockNote",
    "ParseStats",
    "Parsed",
    "Repeat",
    "SourceParser",
    "Unrecognized",
]
