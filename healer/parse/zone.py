"""The zone of a source's zone-less wrapper clock, learned from its own records.

A syslog or journald header (``Jul 02 01:22:06 host prog[pid]:``), supervisord's
``YYYY-MM-DD HH:MM:SS,mmm`` and the vm.sh ``YYYYMMDDTHH:MM`` prefix are written in the
host's local time and say no zone. Read as UTC they are hours off (2 h and 7 h in the
field corpus). Many records of such a source also carry a stamp with its zone (Kata's
``time="...-07:00"``, the Rust virtiofsd's ``...Z``, a docker prefix): the difference
between the two on one record is the header's zone, a multiple of 15 minutes, and it
dates the records that have only the header.

Per wrapper kind, the last zone learned holds, so a change of zone (daylight saving
time) is followed from the first record that shows it. A record whose two clocks
differ by more than a zone and a read delay (a stepped clock, a batch dump) teaches
nothing and is counted. A source with no zoned record keeps reading its header as
UTC. What was learned is said once, as a :class:`ClockNote` in the stream.
"""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta

__all__ = ["AGREE", "MAX_NOTES", "ClockNote", "HeaderZones", "dump_note", "zone_name"]

ZONE_STEP = timedelta(minutes=15)
MAX_ZONE = timedelta(hours=14)
AGREE = timedelta(seconds=90)
"""How far a header and a zoned stamp of one record may differ beyond the zone (the
header's own resolution, up to a minute, and the delay before it was written)."""
_HALF_YEAR = timedelta(days=183)
MAX_NOTES = 16
"""Clock notes one source may emit; later changes are only counted."""


@dataclass(frozen=True, slots=True)
class ClockNote:
    """What a source's clocks said about each other, at the record that said it.

    ``what`` is ``zone`` (the header's zone learned, or changed: ``zone`` holds it,
    as ``+02:00``), ``disagree`` (the first record whose two clocks differ by more
    than any zone; ``apart`` is by how much, in seconds) or ``dump`` (the wrapper's
    stamps are a batch dump; ``wrapper`` names the uptime clock the times come from,
    and ``line`` the record it is anchored at; healer/eventtime.py, rule 5).
    """

    source: str
    line: int
    wrapper: str
    what: str
    zone: str | None
    apart: float
    text: str


_UPTIME_OF = {"ch": "cloud-hypervisor's uptime", "guest": "the guest kernel's uptime"}


def dump_note(source: str, line: int, clock: str, uptime: float, boot: datetime) -> ClockNote:
    """The note for a wrapper found stamping a batch dump, in the words a reader uses."""
    at = (boot + timedelta(seconds=uptime)).isoformat(timespec="milliseconds")
    text = (
        f"wrapper timestamps are a batch dump; times from {_UPTIME_OF.get(clock, clock)},"
        f" anchored at line {line} ({uptime:.3f} s = {at.replace('+00:00', 'Z')})"
    )
    return ClockNote(source, line, clock, "dump", None, 0.0, text)


def zone_name(offset: timedelta) -> str:
    """``+02:00`` for two hours east of UTC."""
    minutes = round(offset.total_seconds() / 60)
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{rest:02d}"


def _nearest(header: datetime, stamp: datetime) -> timedelta:
    """``header - stamp`` with the header's guessed year set from the stamp's (a
    syslog header has none; the new year may fall between the two)."""
    best: timedelta | None = None
    for year in (stamp.year - 1, stamp.year, stamp.year + 1):
        try:
            delta = header.replace(year=year) - stamp
        except ValueError:  # 29 February in a year without it
            continue
        if best is None or abs(delta) < abs(best):
            best = delta
    return best if best is not None else header - stamp


@dataclass(slots=True)
class HeaderZones:
    """Per wrapper kind (``syslog``, ``vm.sh``, ``supervisord``), the zone learned."""

    offsets: dict[str, timedelta] = field(default_factory=dict)
    learned: int = 0  # records whose two clocks agreed on a zone
    disagreements: int = 0  # records whose two clocks differ by more than a zone
    notes: int = 0

    def learn(
        self, source: str, line: int, wrapper: str, header: datetime, stamp: datetime
    ) -> ClockNote | None:
        """One record's header and zoned stamp; a note when it changes what is known."""
        delta = _nearest(header, stamp)
        offset = ZONE_STEP * round(delta / ZONE_STEP)
        if abs(offset) > MAX_ZONE or abs(delta - offset) > AGREE:
            self.disagreements += 1
            if self.disagreements > 1:
                return None
            apart = delta.total_seconds()
            return self._note(
                ClockNote(
                    source,
                    line,
                    wrapper,
                    "disagree",
                    None,
                    apart,
                    f"the {wrapper} header and the record's zoned stamp differ by {apart:.3f} s,"
                    f" {abs(delta - offset).total_seconds():.3f} s off any zone: a stepped clock"
                    " or a batch dump; taught nothing",
                )
            )
        self.learned += 1
        if self.offsets.get(wrapper) == offset:
            return None
        before = self.offsets.get(wrapper)
        self.offsets[wrapper] = offset
        name = zone_name(offset)
        text = f"{wrapper} header times are UTC{name}, from the zoned stamp on line {line}"
        if before is not None:
            text += f" (they were UTC{zone_name(before)} before it)"
        return self._note(ClockNote(source, line, wrapper, "zone", name, 0.0, text))

    def correct(self, wrapper: str, header: datetime, near: datetime | None) -> datetime:
        """The UTC time of a header of ``wrapper`` kind (as read if nothing was learned).

        A header's year was guessed from ``near``, the source's last time in UTC; at
        the new year the local date and the UTC one differ, and the guess is off by
        one year, which the zone puts right."""
        offset = self.offsets.get(wrapper)
        if offset is None:
            return header
        utc = header - offset
        if near is not None and abs(utc - near) > _HALF_YEAR:
            year = utc.year + (1 if utc < near else -1)
            with suppress(ValueError):  # 29 February
                utc = utc.replace(year=year)
        return utc

    def to_dict(self) -> dict[str, float]:
        return {k: v.total_seconds() for k, v in self.offsets.items()}

    @classmethod
    def from_dict(cls, data: dict[str, float]) -> HeaderZones:
        return cls({k: timedelta(seconds=float(v)) for k, v in data.items()})

    def _note(self, note: ClockNote) -> ClockNote | None:
        self.notes += 1
        return note if self.notes <= MAX_NOTES else None
