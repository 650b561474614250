"""healer's own log lines: for journald when stderr is the journal, else for people.

systemd connects a service's stderr to journald and says so in ``JOURNAL_STREAM``
(``device:inode`` of that stream). journald stamps every line with its time, the
pid and the unit, and reads a ``<N>`` prefix as the syslog priority
(sd-daemon(3)): there a line is ``<4>share fs0: ...``. Anywhere else (a terminal, a
file, a container's log) a line carries its own RFC 3339 UTC time, name and pid:
``2026-12-04T10:00:00.123Z healer[42]: WARNING share fs0: ...``.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TextIO

__all__ = ["LEVELS", "LineFormatter", "configure", "format_line", "journal_is"]

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
          "error": logging.ERROR}  # fmt: skip
"""The ``[healer] log_level`` values."""

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3}


def journal_is(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """Whether ``stream`` is the journald stream systemd named in ``JOURNAL_STREAM``."""
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not device.isdigit() or not inode.isdigit():
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError):  # no file descriptor (a test's StringIO), or closed
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))


def format_line(level: int, text: str, *, name: str, pid: int, journald: bool, at: datetime) -> str:
    """One log line (without its newline); a multi-line text is folded into one."""
    text = text.replace("\n", " | ")
    if journald:
        priority = _PRIORITY.get(level, 2 if level >= logging.CRITICAL else 6)
        return f"<{priority}>{text}"
    stamp = at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return f"{stamp} {name}[{pid}]: {logging.getLevelName(level)} {text}"


class LineFormatter(logging.Formatter):
    """:func:`format_line` for the logging module (exceptions folded into the line)."""

    def __init__(self, *, name: str, journald: bool) -> None:
        super().__init__()
        self.name, self.journald = name, journald

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        if record.exc_info:
            text += " " + self.formatException(record.exc_info)
        at = datetime.fromtimestamp(record.created, UTC)
        return format_line(
            record.levelno, text, name=self.name, pid=os.getpid(), journald=self.journald, at=at
        )


def configure(
    level: str = "info",
    *,
    name: str = "healer",
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Send the ``healer`` logger's lines to ``stream`` (stderr) at ``level``."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    journald = journal_is(stream, os.environ if environ is None else environ)
    handler.setFormatter(LineFormatter(name=name, journald=journald))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h.formatter, LineFormatter)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.WARNING)  # other libraries: their warnings only
    logging.getLogger("healer").setLevel(LEVELS[level])
    return handler
