"""Parsers: raw log lines in, typed events out. Pure; no I/O."""

from healer.parse.stream import Checkpoint, Parsed, ParseStats, Repeat, SourceParser, Unrecognized

__all__ = ["Checkpoint", "ParseStats", "Parsed", "Repeat", "SourceParser", "Unrecognized"]
