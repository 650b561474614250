"""How the report writes times, durations, counts and citations (``source:line``)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from healer.engine.model import Cause

__all__ = [
    "TIMER",
    "cause_where",
    "cite",
    "clip",
    "counts",
    "dur",
    "iso",
    "plural",
    "rel",
    "secs",
    "stamp",
    "times",
]

TIMER = "(timer)"
"""Where a circuit retry comes from: a timer, not a log line."""
_SUMMARY_WIDTH = 110


def cite(source: str, line: int) -> str:
    return f"{source}:{line}"


def cause_where(cause: Cause | None) -> str:
    return TIMER if cause is None else cite(cause.source, cause.line)


def stamp(time: datetime | None) -> float | None:
    """A log line's time as seconds since the epoch; None when the line has none."""
    return time.timestamp() if time else None


def iso(t: float | None) -> str:
    """ISO-8601 UTC with milliseconds; ``-`` when the log gave no time."""
    if t is None:
        return "-"
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def secs(d: float | None) -> str:
    return "-" if d is None else f"{d:.3f} s"


def rel(t: float, base: float) -> str:
    """Seconds from ``base`` to ``t``."""
    return secs(round(t - base, 6))


def dur(d: float | None) -> str:
    """A duration since the onset; a negative one means the sources' clocks disagree."""
    if d is None:
        return "-"
    return secs(d) + (" (earlier than the onset: clocks disagree)" if d < 0 else "")


def counts(pairs: Iterable[tuple[str, int]]) -> str:
    return ", ".join(f"{name} {n}" for name, n in pairs) or "none"


def plural(n: int, word: str) -> str:
    return f"{n} {word if n == 1 else word + 's'}"


def times(n: int) -> str:
    return {0: "never", 1: "once"}.get(n, f"{n} times")


def clip(text: str, width: int = _SUMMARY_WIDTH) -> str:
    """``text`` on one line, cut to ``width`` characters."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
