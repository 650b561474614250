"""Where lines come from: files read start to end (replay), and tailed live."""

from healer.sources.notify import watch_files
from healer.sources.reader import ReadStats, open_log, read_batches
from healer.sources.tail import FileTailer
from healer.sources.tailtypes import FileIdentity, TailBatch, TailPosition, TailStats

__all__ = [
    "FileIdentity",
    "FileTailer",
    "ReadStats",
    "TailBatch",
    "TailPosition",
    "TailStats",
    "open_log",
    "read_batches",
    "watch_files",
]
