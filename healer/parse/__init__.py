"""Parsers: raw log lines in, typed events out. Pure; no I/O."""

from healer.parse.stream import Checkpoint, ParseStats, SourceParser, Unrecognized

__all__ = ["Checkpoint", "ParseStats", "SourceParser", "Unrecognized"]
