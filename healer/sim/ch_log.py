"""The stand-in's log file, written as cloud-hypervisor writes its own.

One record per write in the chosen version's format (log-formats.md §1), flushed at
once so a tailer sees it; the texts come from :mod:`healer.vmm.chformat`. Lines CH
prints to stderr, sharing the file, go in without the logger prefix.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from healer.vmm.chformat import log_line

__all__ = ["ChLog"]


class ChLog:
    """CH's logger: one record per write, in the version's format, flushed at once."""

    def __init__(self, path: Path, version: int) -> None:
        self.version = version
        self._file = path.open("ab")
        self._start = time.monotonic()
        self._lock = threading.Lock()

    def write(self, level: str, thread: str, where: str, msg: str) -> None:
        elapsed = time.monotonic() - self._start
        line = log_line(self.version, elapsed, level=level, thread=thread, where=where, msg=msg)
        self.raw(line)

    def raw(self, text: str) -> None:
        """Text without the logger prefix (stderr output sharing the file)."""
        with self._lock:
            if not self._file.closed:
                self._file.write(text.encode())
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.close()
