"""Where lines come from: files read start to end (replay); tailers come later."""

from healer.sources.reader import ReadStats, open_log, read_batches

__all__ = ["ReadStats", "open_log", "read_batches"]
