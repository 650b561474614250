"""Parsers: raw log lines in, typed events out. Pure; no I/O."""

from healer.parse.stream import ParseStats, SourceParser, Unrecognized

__all__ = ["ParseStats", "SourceParser", "Unrecognized"]
