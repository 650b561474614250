"""Event time: read the timestamps real logs carry and anchor relative clocks.

Pure functions plus one small per-source state (:class:`SourceClock`); the current
time is never read here. The rule, applied to each record in source order:

1. a wall-clock timestamp with second precision or better on the record (wrapper or
   inner) is the event time; if the record also carries an uptime (cloud-hypervisor's
   seconds since start, the guest's dmesg seconds since boot), the first such pair
   fixes that clock's boot time;
2. otherwise an uptime on an anchored clock gives boot time + uptime; an unanchored
   clock is anchored to the caller's ingest time (live tailing) when there is one;
3. otherwise a coarse wall clock (the vm.sh minute prefix) is used as is;
4. otherwise the time of the previous record of the same source is carried forward;
5. otherwise the time is unknown (``None``).

Records are never reordered, even when their times go backwards.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

__all__ = [
    "SourceClock",
    "duration_seconds",
    "parse_compact_minute",
    "parse_iso",
    "parse_syslog",
]

_UNIT_SECONDS = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}
_ISO = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[T ](\d\d):(\d\d):(\d\d)(?:[.,](\d+))?\s?(Z|[+-]\d\d:?\d\d)?$"
)
_COMPACT = re.compile(r"(\d{4})(\d\d)(\d\d)T(\d\d):(\d\d)$")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Two-letter month suffixes are unique; some pasted logs lost the first letter.
_MONTH_BY_NAME = {m.lower(): i + 1 for i, m in enumerate(_MONTHS)}
_MONTH_BY_NAME.update({m[1:].lower(): i + 1 for i, m in enumerate(_MONTHS)})


def duration_seconds(value: str, unit: str) -> float:
    """Rust ``Duration`` Debug text (``19.503487ms``, ``186µs``) in seconds."""
    return float(value) * _UNIT_SECONDS[unit]


def parse_iso(text: str) -> datetime | None:
    """RFC 3339 / ISO 8601 with any number of fractional digits; naive means UTC."""
    m = _ISO.match(text.strip())
    if m is None:
        return None
    year, month, day, hour, minute, second, frac, zone = m.groups()
    micro = int((frac or "0")[:6].ljust(6, "0"))
    try:
        stamp = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, UTC
        )
    except ValueError:
        return None
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        stamp -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return stamp


def parse_compact_minute(text: str) -> datetime | None:
    """The user's vm.sh prefix ``20221226T06:48`` (minute precision, UTC)."""
    m = _COMPACT.match(text)
    if m is None:
        return None
    year, month, day, hour, minute = (int(g) for g in m.groups())
    try:
        return datetime(year, month, day, hour, minute, tzinfo=UTC)
    except ValueError:
        return None


def parse_syslog(month: str, day: str, clock: str, year: int) -> datetime | None:
    """An RFC 3164 ``Oct  5 20:15:53`` header, which has no year and no zone (UTC)."""
    number = _MONTH_BY_NAME.get(month.lower())
    if number is None:
        return None
    try:
        hour, minute, second = (int(p) for p in clock.split(":"))
        return datetime(year, number, int(day), hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None


class SourceClock:
    """Resolves each record's event time for one source; see the module docstring."""

    __slots__ = ("boot", "default_year", "last")

    def __init__(self, *, default_year: int, boot: dict[str, datetime] | None = None) -> None:
        self.default_year = default_year
        self.boot: dict[str, datetime] = dict(boot or {})
        self.last: datetime | None = None

    @property
    def year(self) -> int:
        """The year for headers that lack one: the last seen, else the default."""
        return self.last.year if self.last is not None else self.default_year

    def resolve(
        self,
        *,
        wall: datetime | None,
        precise: bool,
        uptime: float | None,
        domain: str | None,
        ingest: datetime | None = None,
    ) -> datetime | None:
        """The event time of one record, updating anchors and the carried time."""
        time: datetime | None = None
        if wall is not None and precise:
            time = wall
            if uptime is not None and domain is not None and domain not in self.boot:
                self.boot[domain] = wall - timedelta(seconds=uptime)
        elif uptime is not None and domain is not None:
            if domain not in self.boot and ingest is not None:
                self.boot[domain] = ingest - timedelta(seconds=uptime)
            boot = self.boot.get(domain)
            if boot is not None:
                time = boot + timedelta(seconds=uptime)
        if time is None:
            time = wall if wall is not None else self.last
        if time is not None:
            self.last = time
        return time
