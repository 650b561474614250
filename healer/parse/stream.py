"""Turn one source's lines into events: record framing, a prefilter, then the parsers.

The hot loop looks at every line once: it keeps byte offsets and line numbers, joins
continuation lines to their record, and runs one compiled alternation of every
keyword the parsers react to. Only records that hit it (about 1 % of a real log) are
decoded and parsed. Everything here is pure: the caller supplies the lines, their
starting byte offset and, when live, the ingest time.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from typing import Any

from ahocorasick_rs import BytesAhoCorasick

from healer.events import Event
from healer.eventtime import (
    MINUTE,
    SKEW_TOLERANCE,
    WHOLE_SECONDS,
    SourceClock,
    parse_iso,
)
from healer.parse import (
    ch_remote,
    cloud_hypervisor,
    crash,
    guest,
    managers,
    qemu,
    supervisor,
    virtiofsd,
)
from healer.parse.envelope import Envelope, peel
from healer.parse.margin import Margin, learn_margin
from healer.parse.patterns import Built, Pattern
from healer.parse.record import Record, make_event
from healer.parse.repeats import RecentEvents, Repeat, repeat
from healer.parse.zone import ClockNote, HeaderZones, dump_note

__all__ = [
    "NEEDLES",
    "PATTERNS",
    "Checkpoint",
    "ClockNote",
    "ParseStats",
    "Parsed",
    "Repeat",
    "SourceParser",
    "Unrecognized",
    "is_candidate",
    "scan",
]

_MORE = (qemu, managers, crash)  # the field corpus' wordings (tests/field_corpus)
PATTERNS: tuple[tuple[Pattern, str | None], ...] = tuple(
    (pattern, module.PROGRAM)
    for module in (cloud_hypervisor, ch_remote, virtiofsd, guest, supervisor, *_MORE)
    for pattern in module.PATTERNS
)
"""Every message pattern, in the order tried, with the program that prints it."""
NEEDLES: tuple[bytes, ...] = tuple(
    dict.fromkeys(
        k.encode()
        for k in (
            *cloud_hypervisor.KEYWORDS,
            *ch_remote.KEYWORDS,
            *virtiofsd.KEYWORDS,
            *guest.KEYWORDS,
            *supervisor.KEYWORDS,
            *(k for module in _MORE for k in module.KEYWORDS),
        )
    )
)
"""The prefilter: a record is parsed only if one of its lines contains a needle
(or is a lone ``{``, the start of an event-monitor object)."""

_INDENT = (b" ", b"\t")
# A line re-wrapped with shell continuations (``... \``) goes on on the next line; the
# prefilter keeps such a record whole, as a keyword may have been cut in two.
_WRAPS = (b"\\\n", b"\\\r\n")
_WRAPPED = (b"\\", b"\\\r")
_JSON_HEADS = (b"\n{\n", b"\n{\r\n")
_JSON_LINES = (b"{", b"{\r")  # an event-monitor object opens with a lone brace
# One pass of a multi-pattern automaton (SIMD-accelerated) finds every needle;
# 32 separate bytes.find passes cost eight times as much on a 100 MB log.
_AUTOMATON = BytesAhoCorasick([*NEEDLES, *_WRAPS, *_JSON_HEADS])
_JSON_INDEX = len(NEEDLES) + len(_WRAPS)
_BY_START = itemgetter(1)

_CHAIN_LINE = re.compile(
    rb"^\s*(?:\d+|X): |^Debug Info: |^\s*\r?$"
    rb"|cloud-hypervisor: .*? --(?:\s+(?:\d+|X): | Debug Info: |\s*\r?$)"
)
_PAREN_CONTINUATION = re.compile(rb"^(?:\S+ )?\([A-Z]\w*\(")
_MODE_PLAIN, _MODE_CHAIN, _MODE_JSON, _MODE_PANIC = range(4)
_MAX_WALK = 1 << 20  # bytes an indented hit may look back for its head
# Any ISO-8601 stamp a wrapper or program writes; its fraction tells its precision.
_ISO_STAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:[.,](\d+))?(?:Z|[+-]\d\d:?\d\d)?")
_STAMP_REACH = 4096  # characters of a record's head searched for the stamp it was dated by


def scan(block: bytes) -> list[tuple[int, int, int]]:
    """Every needle in ``block`` as (needle index, start, end): the one pass over all
    of its bytes. The automaton lets go of the GIL meanwhile, so a reader thread can
    scan the next block while this one is parsed (``SourceParser.feed(scanned=)``)."""
    return _AUTOMATON.find_matches_as_indexes(block)


def is_candidate(line: bytes) -> bool:
    """Whether the prefilter keeps a line (the reference the fast path must equal)."""
    return any(n in line for n in NEEDLES) or line in _JSON_LINES or line.endswith(_WRAPPED)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where to resume a source: byte offset, lines before it, and its clock.

    It always lies on a record boundary, before any record still open, so a
    resumed parser re-reads that record whole. ``exact`` names the uptime clocks
    whose ``boot`` a precise wall clock fixed; the others are live estimates that
    later reads may still tighten (a checkpoint written before this field existed
    has only estimates). ``uptime`` is the last uptime read live on each clock, so a
    VMM restarted while healer was down is still seen as a new boot.
    """

    offset: int
    line: int
    boot: dict[str, str]
    last: str | None
    exact: tuple[str, ...] = ()
    uptime: dict[str, float] = field(default_factory=dict)
    zones: dict[str, float] = field(default_factory=dict)  # seconds east of UTC, per wrapper

    def to_dict(self) -> dict[str, object]:
        return {
            "offset": self.offset,
            "line": self.line,
            "boot": self.boot,
            "last": self.last,
            "exact": list(self.exact),
            "uptime": self.uptime,
            "zones": self.zones,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Checkpoint:
        return cls(
            int(data["offset"]),
            int(data["line"]),
            dict(data["boot"]),
            data["last"],
            tuple(data.get("exact", ())),
            {k: float(v) for k, v in data.get("uptime", {}).items()},
            {str(k): float(v) for k, v in data.get("zones", {}).items()},
        )


@dataclass(frozen=True, slots=True)
class Unrecognized:
    """A record no parser turned into an event (shown by ``replay --all``)."""

    source: str
    offset: int
    line: int
    text: str


Parsed = Event | Unrecognized | Repeat | ClockNote
"""What a source's parser yields: events, the records it knew as repeats, what its
clocks said about each other, and (on the line path) the records it did not know."""


@dataclass(slots=True)
class ParseStats:
    """Counts for one source; ``unparsed_lines`` excludes empty lines.

    ``future_times`` counts records read live whose wall clock was ahead of the
    ingest time by more than the skew tolerance, and so was not believed.
    ``failed_records`` counts records a parser raised on (a bug the text found): each
    is read as no event, kept with its position like any unrecognised record, and the
    records after it are read as usual.
    """

    lines: int = 0
    blank_lines: int = 0
    candidate_records: int = 0
    events: int = 0
    event_lines: int = 0
    long_records: int = 0
    future_times: int = 0
    failed_records: int = 0  # a parser raised on the record: counted, read as no event
    repeats: int = 0  # records of a fault an event of the source already gave

    @property
    def unparsed_lines(self) -> int:
        return self.lines - self.blank_lines - self.event_lines


_BLANK_END = re.compile(rb"\n(?=\r?\n)")  # the newline before an empty (or lone-CR) line


def _blank_lines(block: bytes) -> int:
    """Empty lines (or a lone CR) in ``block`` (whole lines), runs of them included.

    A lookahead finds each one where it starts without splitting the block into a
    million lines (``count(b"\\n\\n")`` would miss overlapping pairs: half a run).
    """
    first = 1 if block.startswith((b"\n", b"\r\n")) else 0
    return first + len(_BLANK_END.findall(block))


_STAMP_FIRST = ("<", "2", ">", "`", "$", "\x1b")
"""How a line with a wrapper's stamp may start, but for syslog's month: <pri>, a year,
a quote, a prompt, a colour code."""
CLOCK_SAMPLE = 1 << 16
"""Bytes of a source's start read for what its clocks say before parsing it."""
_PAYLOAD_STAMP = re.compile(
    r"\[?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d))[\] ]"
)


def _uptime(payload: str) -> tuple[float, str] | None:
    """The uptime a record carries and its clock (cloud-hypervisor's, the guest's), as
    the parsers that date records read them."""
    rec = Record(source="", offset=0, line=0, head=payload, payload=payload)
    read = ("cloud-hypervisor:" in payload and cloud_hypervisor.match_logger(rec)) or (
        guest.match_dmesg(rec)
    )
    if not read or rec.uptime is None or rec.domain is None:
        return None
    return rec.uptime, rec.domain


def _payload_stamp(payload: str) -> datetime | None:
    """A zoned stamp a program put first in its message (env_logger's ``[...Z ``)."""
    m = _PAYLOAD_STAMP.match(payload)
    return parse_iso(m.group(1)) if m is not None else None


def _mode(head: bytes) -> int:
    if b"chain of errors" in head:
        return _MODE_CHAIN
    if head in _JSON_LINES:
        return _MODE_JSON
    if b"panicked at" in head and head.rstrip().endswith(b":"):
        return _MODE_PANIC
    return _MODE_PLAIN


def _indented(line: bytes) -> bool:
    return line[:1] in _INDENT and not line.isspace()


def _records(sample: bytes, number: int) -> Iterator[tuple[str, int]]:
    """The sample's lines with their numbers, a re-wrapped line joined back first."""
    lines = [raw.decode("utf-8", "replace").rstrip("\r") for raw in sample.split(b"\n")[:-1]]
    i = 0
    while i < len(lines):
        first = i
        while lines[i].endswith("\\") and i + 1 < len(lines) and lines[i + 1].strip():
            i += 1
        yield _unwrap(lines[first : i + 1])[0], number + first + 1
        i += 1


def _unwrap(texts: list[str]) -> list[str]:
    """Join the lines a reporter re-wrapped with shell ``\\`` continuations back into
    the line the program wrote (a blank on either side of the cut was one blank)."""
    out: list[str] = []
    for text in texts:
        if out and out[-1].endswith("\\"):
            before = out[-1][:-1]
            blank = before[-1:].isspace() or text[:1].isspace()
            out[-1] = before.rstrip() + (" " if blank else "") + text.strip()
        else:
            out.append(text)
    return out


def _precision(rec: Record) -> float:
    """The resolution, in seconds, of the wall clock that dates ``rec``.

    The wrappers and parsers only say whether a stamp is precise (the vm.sh minute
    prefix is not); the stamp's own text says how precise. An ISO stamp is as fine
    as its fraction; one without a fraction (Rust env_logger) and a syslog header
    (no ISO text) count whole seconds.
    """
    if rec.wall is None:
        return 0.0
    if not rec.precise:
        return MINUTE
    for m in _ISO_STAMP.finditer(rec.head, 0, _STAMP_REACH):
        if parse_iso(m.group(0)) == rec.wall:
            digits = m.group(1)
            return 10.0 ** -len(digits) if digits else WHOLE_SECONDS
    return 1e-6 if rec.wall.microsecond else WHOLE_SECONDS


class SourceParser:
    """Stateful per-source parser, fed blocks of whole lines.

    Two paths give the same events: the fast path finds candidate lines with
    ``bytes.find`` over the whole block and touches nothing else; the line path
    (``keep_unrecognized=True``, for ``replay --all``) walks every record so it can
    also report the ones no parser recognised.
    """

    def __init__(
        self,
        source: str,
        *,
        default_year: int,
        keep_unrecognized: bool = False,
        max_record_lines: int = 256,
        resume: Checkpoint | None = None,
        skew_tolerance: float = SKEW_TOLERANCE,
        guest: bool = False,
    ) -> None:
        self.source = source
        self.guest = guest  # the whole source is the guest's text (trust = "guest")
        self.stats = ParseStats()
        self.clock = SourceClock(default_year=default_year, tolerance=skew_tolerance)
        self.keep_unrecognized = keep_unrecognized
        self.max_record_lines = max_record_lines
        self._line = 0  # number of the last line seen
        self._end = 0  # offset just past the last line fed
        if resume is not None:
            self._line, self._end = resume.line, resume.offset
            self.clock.boot = {k: datetime.fromisoformat(v) for k, v in resume.boot.items()}
            self.clock.exact = set(resume.exact) & set(resume.boot)
            self.clock.uptime = dict(resume.uptime)
            self.clock.last = datetime.fromisoformat(resume.last) if resume.last else None
        # The open record: its lines, offset, first line number, mode, and whether
        # the prefilter kept it. Open means a later line may still continue it.
        self._open: list[bytes] = []
        self._open_at = 0
        self._open_line = 0
        self._open_mode = _MODE_PLAIN
        self._open_hit = False
        # When the open record's first line was read (live), which is what dates it:
        # the record may be closed only by a later block, or by ``close``.
        self._open_ingest: datetime | None = None
        self._recent = RecentEvents()  # to read one fault told twice as one event
        self.zones = HeaderZones.from_dict(resume.zones) if resume else HeaderZones()
        self._notes: list[ClockNote] = []  # what the clocks said, yielded before the record
        self._margin: Margin | None = None  # a reporter's indent of the whole log

    def feed(
        self,
        block: bytes,
        offset: int,
        ingest: datetime | None = None,
        *,
        scanned: list[tuple[int, int, int]] | None = None,
    ) -> list[Parsed]:
        """Parse ``block`` (whole lines, each ending in a newline) found at ``offset``;
        ``scanned`` is :func:`scan` of it, when a reader thread ran it already."""
        out: list[Parsed] = []
        end = offset + len(block)
        if self._margin is not None:
            block, scanned = self._margin.strip(block), None
        self.stats.blank_lines += _blank_lines(block)
        base = self._line
        if self.keep_unrecognized:
            self._feed_lines(block, offset, ingest, out)
            last = base + block.count(b"\n")
        else:
            last = self._feed_fast(block, offset, ingest, out, scanned)
        self.stats.lines += last - base
        self._line = last
        self._end = end
        return out

    def _at(self, offset: int, pos: int) -> int:
        """The file offset of the line that starts at ``pos`` of the block fed."""
        return offset + (pos if self._margin is None else self._margin.position(pos))

    @property
    def open_lines(self) -> int:
        """Lines of the record still open (a later line may continue it)."""
        return len(self._open)

    def checkpoint(self) -> Checkpoint:
        """A safe place to resume: before the open record, else after the last line."""
        if self._open:
            offset, line = self._open_at, self._open_line - 1
        else:
            offset, line = self._end, self._line
        clock = self.clock
        boot = {k: v.isoformat() for k, v in clock.boot.items()}
        last = clock.last.isoformat() if clock.last else None
        exact = tuple(sorted(clock.exact))
        return Checkpoint(offset, line, boot, last, exact, dict(clock.uptime), self.zones.to_dict())

    def close(self, ingest: datetime | None = None) -> list[Parsed]:
        """End of input: finish the open record.

        A record fed live keeps the ingest time of the block that brought it;
        ``ingest`` dates only a record that had none.
        """
        out: list[Parsed] = []
        self._close_open(ingest, out)
        return out

    def parse_all(self, data: bytes) -> list[Parsed]:
        """Convenience for tests and small inputs: a whole log from offset 0."""
        if data and not data.endswith(b"\n"):
            data += b"\n"
        return self.learn_clocks(data) + self.feed(data, 0) + self.close()

    def learn_clocks(self, sample: bytes) -> list[Parsed]:
        """Before reading a source from its start, read at most :data:`CLOCK_SAMPLE`
        bytes of it for what its clocks say, so the records before the first that
        says it are dated by it too: its header's zone (and year), from the first
        records that carry a zoned stamp as well (healer/parse/zone.py); and whether
        its wrapper stamps a batch dump, told by the uptimes (healer/eventtime.py,
        rule 5)."""
        notes: list[Parsed] = []
        pairs: list[tuple[datetime, float, str]] = []  # (wall, uptime, clock)
        lines: list[int] = []
        sample = sample[:CLOCK_SAMPLE]
        if self._line == 0 and (margin := learn_margin(sample)):
            self._margin = Margin(margin)
            sample = self._margin.strip(sample[: sample.rfind(b"\n") + 1])
        for text, number in _records(sample, self._line):
            if not text[:1].isalpha() and text[:1] not in _STAMP_FIRST:
                continue  # no stamp first
            env = peel(text, self.clock.year)
            kind = env.header_kind
            if env.header is not None and kind is not None and kind not in self.zones.offsets:
                self._learn_zone(env.header, kind, env, number, notes)
            up = _uptime(env.payload)
            if up is not None and env.wall is not None and env.precise:
                wall = env.wall
                if not env.zoned and kind is not None:
                    wall = self.zones.correct(kind, wall, None)
                pairs.append((wall, *up))
                lines.append(number)
        for domain, index in self.clock.anchor_dump(pairs):
            boot = self.clock.boot[domain]
            notes.append(dump_note(self.source, lines[index], domain, pairs[index][1], boot))
        return notes

    def _learn_zone(
        self, header: datetime, kind: str, env: Envelope, number: int, notes: list[Parsed]
    ) -> None:
        """The zone the source starts in; later changes are read in turn."""
        stamp = env.wall if env.zoned else _payload_stamp(env.payload)
        if stamp is None:
            return
        if self.clock.last is None:
            self.clock.default_year = stamp.year  # the header's missing year
        note = self.zones.learn(self.source, number, kind, header, stamp)
        if note is not None:
            notes.append(note)

    # --- the fast path -----------------------------------------------------------

    def _feed_fast(
        self,
        block: bytes,
        offset: int,
        ingest: datetime | None,
        out: list[Parsed],
        scanned: list[tuple[int, int, int]] | None,
    ) -> int:
        """Parse the block's candidate records; returns the number of its last line (the
        newlines are counted once, piece by piece between candidates)."""
        pos, number = 0, self._line  # ``number`` is the line number before ``pos``
        if self._open and self._open_hit:
            pos, number = self._extend(block, pos, number)
            if pos >= len(block):
                return number
            self._close_open(ingest, out)
        matches = scan(block) if scanned is None else scanned
        for start in self._candidates(block, pos, matches):
            if start < pos:
                continue  # already part of the previous record
            number += block.count(b"\n", pos, start)
            head, head_number = self._head_of(block, pos, start, number, offset)
            self._begin_hit(block, head, start, head_number, offset, ingest=ingest)
            pos = block.index(b"\n", start) + 1
            number += 1
            pos, number = self._extend(block, pos, number)
            if pos >= len(block):
                return number  # the record may go on in the next block
            self._close_open(ingest, out)
        return self._remember_tail(block, pos, number, offset, ingest)

    @staticmethod
    def _candidates(block: bytes, pos: int, matches: list[tuple[int, int, int]]) -> list[int]:
        """Sorted starts of the lines at or after ``pos`` that hold a needle."""
        # Each needle's line start is looked for back to the previous needle only: an
        # rfind to the block's start per needle is quadratic on a line full of needles.
        rfind = block.rfind
        starts: set[int] = set()
        line_start = scanned = 0
        for index, start, _end in sorted(matches, key=_BY_START):
            if index >= _JSON_INDEX:
                starts.add(start + 1)
                continue
            newline = rfind(b"\n", scanned, start)
            if newline >= 0:
                line_start = newline + 1
            scanned = start
            starts.add(line_start)
        if block.startswith((b"{\n", b"{\r\n")):
            starts.add(0)
        return sorted(s for s in starts if s >= pos)

    def _head_of(
        self, block: bytes, floor: int, start: int, number: int, offset: int
    ) -> tuple[int, int]:
        """An indented candidate continues the record above it: find that head.

        Returns -1 as the head when it lies in the tail kept from the last block.
        """
        head, head_number = start, number + 1
        while (
            block[head : head + 1] in _INDENT or self._wrapped_above(block, head)
        ) and start - head < _MAX_WALK:
            if head <= floor:
                if head == 0 and self._open:
                    return -1, self._open_line
                break
            previous = block.rfind(b"\n", 0, head - 1) + 1
            if previous < floor or not block[previous : head - 1].strip():
                break  # the line above ends an earlier record, or is blank
            head, head_number = previous, head_number - 1
        return head, head_number

    def _wrapped_above(self, block: bytes, head: int) -> bool:
        """The line above ``head`` ends in a shell continuation: ``head`` goes on with it."""
        if head == 0:
            return bool(self._open) and self._open[-1].endswith(_WRAPPED)
        return block.endswith(_WRAPPED, 0, head - 1)

    def _begin_hit(
        self,
        block: bytes,
        head: int,
        start: int,
        head_number: int,
        offset: int,
        *,
        ingest: datetime | None,
    ) -> None:
        end = block.index(b"\n", start)
        if head < 0:
            lines = [*self._open, *block[:end].split(b"\n")]
        else:
            lines = block[head:end].split(b"\n")
            self._open_at, self._open_line = self._at(offset, head), head_number
            self._open_ingest = ingest
        self._open = lines
        self._open_mode = _mode(lines[0])
        self._open_hit = True

    def _extend(self, block: bytes, pos: int, number: int) -> tuple[int, int]:
        """Add the lines from ``pos`` that continue the open record."""
        size = len(block)
        while pos < size:
            end = block.index(b"\n", pos)
            line = block[pos:end]
            if not self._continues(self._open_mode, self._open, line):
                break
            self._open.append(line)
            pos, number = end + 1, number + 1
        return pos, number

    def _remember_tail(
        self, block: bytes, pos: int, number: int, offset: int, ingest: datetime | None
    ) -> int:
        """Keep the block's last record: an indented line in the next block may hit.

        When the whole block (from ``pos`` 0) continues the tail kept from the block
        before, the two make one record. Returns the number of the block's last line.
        """
        earlier = self._open if pos == 0 and not self._open_hit else []
        earlier_at, earlier_line = self._open_at, self._open_line
        earlier_ingest = self._open_ingest
        self._open_hit = False
        self._open = []
        self._open_ingest = None
        if pos >= len(block):
            return number
        last = max(block.rfind(b"\n", pos, len(block) - 1) + 1, pos)
        lines = [block[last:-1]]
        end_number = head_number = number + block.count(b"\n", pos)
        while last > pos and len(lines) < self.max_record_lines:
            previous = max(block.rfind(b"\n", pos, last - 1) + 1, pos)
            line = block[previous : last - 1]
            if not line.strip() or not (lines[0][:1] in _INDENT or line.endswith(_WRAPPED)):
                break
            lines.insert(0, line)
            last, head_number = previous, head_number - 1
        if not (lines[-1].strip() and lines[0].strip()):
            return end_number
        if last == 0 and earlier and (lines[0][:1] in _INDENT or earlier[-1].endswith(_WRAPPED)):
            self._open = [*earlier, *lines]
            self._open_at, self._open_line = earlier_at, earlier_line
            self._open_ingest = earlier_ingest
        else:
            self._open = lines
            self._open_at, self._open_line = self._at(offset, last), head_number
            self._open_ingest = ingest
        return end_number

    # --- the line path (reference; also reports unrecognised records) ------------

    def _feed_lines(
        self, block: bytes, offset: int, ingest: datetime | None, out: list[Parsed]
    ) -> None:
        number = self._line
        at = 0
        for line in block.split(b"\n")[:-1]:
            number += 1
            here = self._at(offset, at)
            at += len(line) + 1
            if self._open and self._continues_any(line):
                self._open.append(line)
                if not self._open_hit and is_candidate(line):
                    self._open_hit = True
                    self._open_mode = _mode(self._open[0])
                continue
            self._close_open(ingest, out)
            if not line or line.isspace():
                continue
            self._open = [line]
            self._open_at, self._open_line = here, number
            self._open_ingest = ingest
            self._open_hit = is_candidate(line)
            self._open_mode = _mode(line)

    def _continues_any(self, line: bytes) -> bool:
        if self._open_hit:
            return self._continues(self._open_mode, self._open, line)
        if len(self._open) >= self.max_record_lines:
            return False
        return _indented(line) or (self._open[-1].endswith(_WRAPPED) and not line.isspace())

    def _close_open(self, ingest: datetime | None, out: list[Parsed]) -> None:
        if self._open and (self._open_hit or self.keep_unrecognized):
            read = self._open_ingest if self._open_ingest is not None else ingest
            self._finish(self._open, self._open_at, self._open_line, read, out, hit=self._open_hit)
        self._open = []
        self._open_hit = False
        self._open_ingest = None

    def _continues(self, mode: int, pending: list[bytes], line: bytes) -> bool:
        if len(pending) >= self.max_record_lines:
            self.stats.long_records += 1
            return False
        if mode == _MODE_JSON:
            return pending[-1].rstrip() != b"}"
        if line[:1] in _INDENT and not line.isspace():
            return True
        if pending[-1].endswith(_WRAPPED) and line.strip():
            return True
        if mode == _MODE_CHAIN:
            return _CHAIN_LINE.search(line) is not None
        if mode == _MODE_PANIC:
            return len(pending) == 1 and bool(line) and not line.startswith(b"note:")
        return _PAREN_CONTINUATION.match(line) is not None

    def _finish(
        self,
        lines: list[bytes],
        offset: int,
        number: int,
        ingest: datetime | None,
        out: list[Parsed],
        *,
        hit: bool,
    ) -> None:
        texts = [raw.decode("utf-8", "replace").rstrip("\r") for raw in lines]
        while len(texts) > 1 and not texts[-1].strip():
            texts.pop()
        event = None
        if hit:
            self.stats.candidate_records += 1
            try:
                event = self._parse(texts, offset, number, ingest)
            except Exception:  # one hostile record must not end the stream
                self.stats.failed_records += 1
            if self._notes:
                out.extend(self._notes)
                self._notes.clear()
        if event is None:
            if self.keep_unrecognized:
                out.append(Unrecognized(self.source, offset, number, "\n".join(texts)))
            return
        self.stats.event_lines += len(lines)
        again = self._recent.repeat_of(event)
        if again is not None:
            self.stats.repeats += 1
            out.append(repeat(event, *again))
            return
        self.stats.events += 1
        out.append(event)

    def _parse(
        self, texts: list[str], offset: int, number: int, ingest: datetime | None
    ) -> Event | None:
        lines = _unwrap(texts) if any(t.endswith("\\") for t in texts) else texts
        head = lines[0]
        year = self.clock.year
        env = peel(head, year)
        rec = Record(
            source=self.source,
            offset=offset,
            line=number,
            head=head,
            payload=env.payload,
            raw="\n".join(texts),
            wall=env.wall,
            precise=env.precise,
            zoned=env.zoned,
            header=env.header,
            header_kind=env.header_kind,
            program=env.program,
            pid=env.pid,
            level=env.level,
            guest=self.guest or env.guest,
        )
        rec.continuation = [peel(t.strip(), year).payload.strip() for t in lines[1:]]
        built = self._classify(rec, lines)
        self._zone(rec)
        if built is None:
            return None
        cls, fields = built
        time = self.clock.resolve(
            wall=rec.wall,
            precision=_precision(rec),
            uptime=rec.uptime,
            domain=rec.domain,
            ingest=ingest,
        )
        self.stats.future_times = self.clock.future_times
        for domain, uptime, boot in self.clock.redated:
            self._notes.append(dump_note(self.source, rec.line, domain, uptime, boot))
        self.clock.redated.clear()
        return make_event(cls, rec, time, fields)

    def _zone(self, rec: Record) -> None:
        """Learn the zone of the record's zone-less header from its zoned stamp, or
        date a record that has only the header by the zone learned."""
        header, kind = rec.header, rec.header_kind
        if header is None or kind is None:
            return
        if rec.zoned and rec.wall is not None:
            note = self.zones.learn(self.source, rec.line, kind, header, rec.wall)
            if note is not None:
                self._notes.append(note)
        elif rec.wall == header:
            rec.wall = self.zones.correct(kind, header, self.clock.last)

    @staticmethod
    def _classify(rec: Record, texts: list[str]) -> Built:
        payload = rec.payload
        if payload in ("{", "{\r"):
            built, uptime, label = cloud_hypervisor.parse_event_monitor("\n".join(texts))
            if built is not None:
                rec.program, rec.uptime, rec.domain = "cloud-hypervisor", uptime, "ch"
                rec.message, rec.continuation = f"event-monitor: {label}", []
            return built
        if not (
            ("cloud-hypervisor:" in payload and cloud_hypervisor.match_logger(rec))
            or (payload[:1].isdigit() and cloud_hypervisor.match_trimmed(rec))
            or virtiofsd.match_env_logger(rec)
            or virtiofsd.match_c_debug(rec)
            or guest.match_dmesg(rec)
        ):
            rec.message = payload.strip()
        text = rec.full_message()
        for (pattern, build), program in PATTERNS:
            m = pattern.search(text)
            if m is not None:
                built = build(rec, m)
                if built is not None:
                    rec.program = rec.program or program
                    return built
        return None
