"""Event time: read the timestamps real logs carry and anchor relative clocks.

Pure functions plus one small per-source state (:class:`SourceClock`); the current
time is never read here. A caller that reads live passes ``ingest``, the moment it
read the record's bytes (UTC); a record is always read after it was written, so the
ingest time bounds the truth from above. The rule, applied to each record in source
order:

1. A wall clock with sub-second precision on the record (the outermost wrapper's,
   else the program's own) is its time. Live, a stamp later than its ingest time by
   more than the skew tolerance (:data:`SKEW_TOLERANCE`, a parameter of
   :class:`SourceClock`) is not believed: it is counted (``future_times``) and the
   record is treated as having no wall clock; it never anchors an uptime clock.
   If the record also carries an uptime (cloud-hypervisor's seconds since start, the
   guest's dmesg seconds since boot), the first such pair fixes that clock's boot
   time exactly.
2. A coarse wall clock (whole seconds: Rust env_logger, syslog headers; whole
   minutes: the vm.sh prefix) means "some time in [stamp, stamp + precision)".
   Live, the record's uptime estimate (3) is used when it falls within
   [stamp - tolerance, stamp + precision + tolerance]; else the ingest time when it
   falls within [stamp, stamp + precision + tolerance]; else (a backlog read later)
   the stamp. Replay keeps today's order: whole seconds count as precise (1), a
   minute stamp is used only when no anchored uptime clock gives a time.
3. Live, every record with an uptime bounds its clock's boot time from above by
   ``ingest - uptime``; a clock not fixed exactly (1) takes the least bound seen, so
   ``boot + uptime`` is never later than the record was read and is within the
   smallest read delay of the truth. An uptime lower than the last one on the same
   clock is a new boot (the VMM restarted): the anchor is dropped and estimated
   afresh. In replay only an exact anchor exists, and anchors never change but in a
   batch dump (5).
4. Otherwise, live, the ingest time; in replay, the time of the previous record of
   the same source is carried forward, and before any the time is unknown (``None``).
5. In replay, a wrapper that stamps a batch dump (docker printing a boot.log written
   a minute earlier, in one go) is told by the uptime on its records: within one run
   of a program, ``wall - uptime`` is its start, the same on every record give or take
   read delays. A later record that puts the start more than :data:`DUMP_GAP` earlier
   than the anchor was stamped long after it was written; a record is never stamped
   before it is written, so the earliest start any record gives is the credible one.
   From there on that clock's records are timed ``boot + uptime`` (the earliest start
   so far), and the change is reported (``redated``). A prescan of the source's start
   (:meth:`SourceClock.anchor_dump`) lets the records before that one be timed so too.
   In a dump, an uptime lower than the last one on the clock is a new run, anchored
   afresh.

Records are never reordered, even when their times go backwards.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

__all__ = [
    "DUMP_GAP",
    "MINUTE",
    "SKEW_TOLERANCE",
    "WHOLE_SECONDS",
    "SourceClock",
    "duration_seconds",
    "parse_compact_minute",
    "parse_iso",
    "parse_syslog",
]

SKEW_TOLERANCE = 2.0
"""Seconds a live wall clock may run ahead of the moment healer read its line."""
WHOLE_SECONDS = 1.0
"""The precision of env_logger and syslog stamps; anything finer is precise."""
MINUTE = 60.0
"""The precision of the vm.sh ``YYYYMMDDTHH:MM`` prefix."""
DUMP_GAP = 5.0
"""Seconds earlier than its anchor a record of one run may put the run's start before
its wrapper's stamps are read as a batch dump (read delays are far shorter)."""

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
    """Resolves each record's event time for one source; see the module docstring.

    ``boot`` maps a clock (``"ch"``, ``"guest"``) to its boot time; ``exact`` names
    the ones fixed by a precise wall clock (the others are live estimates, which only
    tighten); ``uptime`` is the last uptime seen live on each, to notice a new boot.
    ``tolerance`` is how far (seconds) a live wall clock may run ahead of the ingest
    time and still be believed, and how late a coarse stamp may be read and still
    count as read at once.
    """

    __slots__ = (
        "boot",
        "default_year",
        "dumped",
        "exact",
        "future_times",
        "last",
        "redated",
        "tolerance",
        "uptime",
    )

    def __init__(
        self,
        *,
        default_year: int,
        boot: dict[str, datetime] | None = None,
        exact: Iterable[str] = (),
        uptime: dict[str, float] | None = None,
        tolerance: float = SKEW_TOLERANCE,
    ) -> None:
        self.default_year = default_year
        self.boot: dict[str, datetime] = dict(boot or {})
        self.exact: set[str] = set(exact)
        self.uptime: dict[str, float] = dict(uptime or {})
        self.tolerance = tolerance
        self.last: datetime | None = None
        self.future_times = 0
        self.dumped: set[str] = set()  # clocks whose wrapper stamps are a batch dump (5)
        self.redated: list[tuple[str, float, datetime]] = []  # (clock, uptime, boot), to say

    @property
    def year(self) -> int:
        """The year for headers that lack one: the last seen, else the default."""
        return self.last.year if self.last is not None else self.default_year

    def resolve(
        self,
        *,
        wall: datetime | None,
        precision: float = 0.0,
        uptime: float | None = None,
        domain: str | None = None,
        ingest: datetime | None = None,
    ) -> datetime | None:
        """The event time of one record, updating anchors and the carried time.

        ``precision`` is the wall clock's resolution in seconds (0 for an exact stamp,
        1 for whole seconds, 60 for whole minutes).
        """
        if ingest is None:
            time = self._replayed(wall, precision, uptime, domain)
        else:
            time = self._live(wall, precision, uptime, domain, ingest)
        if time is not None:
            self.last = time
        return time

    def _replayed(
        self, wall: datetime | None, precision: float, uptime: float | None, domain: str | None
    ) -> datetime | None:
        """Replay has no read time: whole seconds count as precise, anchors are fixed
        but for a new run and a batch dump (5)."""
        time: datetime | None = None
        if uptime is not None and domain is not None:
            if wall is not None and precision <= WHOLE_SECONDS:
                self._check_dump(wall, uptime, domain)
            if domain in self.dumped and domain in self.boot:
                return self.boot[domain] + timedelta(seconds=uptime)
        if wall is not None and precision <= WHOLE_SECONDS:
            time = wall
            if uptime is not None and domain is not None and domain not in self.boot:
                self.boot[domain] = wall - timedelta(seconds=uptime)
                self.exact.add(domain)
        elif uptime is not None and domain is not None:
            boot = self.boot.get(domain)
            if boot is not None:
                time = boot + timedelta(seconds=uptime)
        if time is None:
            time = wall if wall is not None else self.last
        return time

    def anchor_dump(self, pairs: Iterable[tuple[datetime, float, str]]) -> list[tuple[str, int]]:
        """Before replaying a source: its first records' (wall, uptime, clock) pairs,
        in order. Each clock whose first run shows a batch dump (5) is anchored at the
        earliest start its records give; returns (clock, index of that pair)."""
        firsts: dict[str, datetime] = {}  # clock -> the start its first record gives
        last: dict[str, float] = {}
        best: dict[str, tuple[datetime, int]] = {}
        dumped: set[str] = set()
        for index, (wall, uptime, domain) in enumerate(pairs):
            if uptime < last.get(domain, uptime):
                last[domain] = float("inf")  # a new run: only the first one is read
                continue
            last[domain] = uptime
            start = wall - timedelta(seconds=uptime)
            if start < firsts.setdefault(domain, start) - timedelta(seconds=DUMP_GAP):
                dumped.add(domain)
            if domain not in best or start < best[domain][0]:
                best[domain] = (start, index)
        found: list[tuple[str, int]] = []
        for domain in sorted(dumped):
            self.boot[domain] = best[domain][0]
            self.exact.add(domain)
            self.dumped.add(domain)
            found.append((domain, best[domain][1]))
        return found

    def _check_dump(self, wall: datetime, uptime: float, domain: str) -> None:
        """Rule 5, on one record with a precise wall clock and an uptime."""
        start = wall - timedelta(seconds=uptime)
        before = self.uptime.get(domain)
        self.uptime[domain] = uptime
        boot = self.boot.get(domain)
        if boot is None:
            return
        if before is not None and uptime < before:  # a new run of the program
            if domain in self.dumped:
                self.boot[domain] = start
            return
        if start < boot - timedelta(seconds=DUMP_GAP) and domain not in self.dumped:
            self.dumped.add(domain)
            self.redated.append((domain, uptime, start))
        if domain in self.dumped and start < boot:
            self.boot[domain] = start  # never stamped before written: the earliest holds

    def _live(
        self,
        wall: datetime | None,
        precision: float,
        uptime: float | None,
        domain: str | None,
        ingest: datetime,
    ) -> datetime:
        """Read live: the ingest time bounds every estimate, and is the last resort."""
        slack = timedelta(seconds=self.tolerance)
        if wall is not None and wall > ingest + slack:
            self.future_times += 1  # a clock far ahead (or a forged line): not believed
            wall = None
        estimate: datetime | None = None
        if uptime is not None and domain is not None:
            since = timedelta(seconds=uptime)
            self._bound(domain, uptime, ingest - since)
            if wall is not None and precision < WHOLE_SECONDS and domain not in self.exact:
                self.boot[domain] = wall - since
                self.exact.add(domain)
            estimate = self.boot[domain] + since
        if wall is None:
            return estimate if estimate is not None else ingest
        if precision < WHOLE_SECONDS:
            return wall
        window_end = wall + timedelta(seconds=precision) + slack
        if estimate is not None and wall - slack <= estimate <= window_end:
            return estimate
        if wall <= ingest <= window_end:
            return ingest  # read within the stamp's own second (minute): the better guess
        return wall  # a backlog: the stamp is nearer than the read time

    def _bound(self, domain: str, uptime: float, bound: datetime) -> None:
        """One live record's upper bound on its clock's boot time."""
        if uptime < self.uptime.get(domain, uptime):  # the clock went back: a new boot
            self.boot.pop(domain, None)
            self.exact.discard(domain)
        self.uptime[domain] = uptime
        current = self.boot.get(domain)
        if current is None or (domain not in self.exact and bound < current):
            self.boot[domain] = bound
