"""An incident while the stream runs: bounded row lists and counters, frozen on demand."""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Generic, Protocol, TypeVar

from healer.engine.model import HEALING, Phase, Status, Transition
from healer.events import Event
from healer.report._format import cause_where, cite, clip, stamp
from healer.report._hints import hints
from healer.report.results import (
    Action,
    Began,
    Circuit,
    Collapsed,
    Entry,
    FirstFailure,
    Incident,
)

__all__ = ["Building", "Seen", "Tally", "event_entry", "sorted_items"]

_CIRCUITS_KEPT = 20
# Failures whose line is written long after the fault began, by how long: the onset of
# an incident is then that much earlier than the line (it is what a reader concludes).
REPORTED_BEFORE: dict[str, tuple[float, str]] = {
    "BackendConnectTimeout": (
        60.0,
        "cloud-hypervisor's connect loop, which gave up here, had tried for 60 s",
    ),
}
_V = TypeVar("_V")


def sorted_items(counts: Mapping[str, _V]) -> tuple[tuple[str, _V], ...]:
    return tuple(sorted(counts.items()))


@dataclass(frozen=True, slots=True)
class Seen:
    """An event as the collector remembers it: arrival order and the time it sorts at."""

    seq: int
    at: float
    event: Event

    @property
    def where(self) -> str:
        return cite(self.event.source, self.event.line)

    @property
    def what(self) -> str:
        return self.event.kind


class Tally:
    """Decisions counted per action: would run, suppressed, and why suppressed."""

    __slots__ = ("reasons", "suppressed", "would")

    def __init__(self) -> None:
        self.would: Counter[str] = Counter()
        self.suppressed: Counter[str] = Counter()
        self.reasons: Counter[str] = Counter()

    def add(self, action: str, suppressed: str | None) -> None:
        if suppressed is None:
            self.would[action] += 1
        else:
            self.suppressed[action] += 1
            self.reasons[suppressed] += 1


# --- bounded lists -----------------------------------------------------------------


class _Row(Protocol):
    @property
    def seq(self) -> int: ...
    @property
    def at(self) -> float: ...
    @property
    def where(self) -> str: ...
    @property
    def what(self) -> str: ...


_R = TypeVar("_R", bound=_Row)


@dataclass(slots=True)
class _Run:
    seq: int
    count: int
    first: float
    last: float
    first_where: str
    last_where: str


class _Capped(Generic[_R]):
    """The first and the last rows kept; those in between only counted, per ``what``."""

    __slots__ = ("head", "head_max", "incident", "runs", "tail", "tail_max")

    def __init__(self, limit: int, incident: str) -> None:
        self.tail_max = limit // 4
        self.head_max = limit - self.tail_max
        self.head: list[_R] = []
        self.tail: deque[_R] = deque()
        self.runs: dict[str, _Run] = {}
        self.incident = incident

    def add(self, row: _R, *, follows: bool = False) -> None:
        """Keep ``row``; ``follows`` keeps it with the head row before it (its response)."""
        if len(self.head) < self.head_max or (follows and not self.tail and not self.runs):
            self.head.append(row)
            return
        self.tail.append(row)
        if len(self.tail) > self.tail_max:
            self._fold(self.tail.popleft())

    def _fold(self, row: _R) -> None:
        run = self.runs.get(row.what)
        if run is None:
            self.runs[row.what] = _Run(row.seq, 1, row.at, row.at, row.where, row.where)
        else:
            run.count += 1
            run.last = row.at
            run.last_where = row.where

    def collapsed(self) -> tuple[Collapsed, ...]:
        out = [
            Collapsed(
                r.seq, self.incident, what, r.count, r.first, r.last, r.first_where, r.last_where
            )
            for what, r in self.runs.items()
        ]
        return tuple(sorted(out, key=lambda c: c.seq))


# --- recorded outcomes -------------------------------------------------------------


_T = TypeVar("_T")


class Outcomes:
    """What became of the decisions (a journal's outcome records), bounded.

    Outcomes of the rows kept at the head are kept for good; of the others only the
    latest ``limit``, enough for the tail rows, whose outcomes follow them closely.
    Every final outcome is counted, and every action started and not yet ended.
    """

    __slots__ = ("final", "head", "limit", "recent", "running")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head: dict[str, tuple[Status, str] | None] = {}
        self.recent: OrderedDict[str, tuple[Status, str]] = OrderedDict()
        self.final: Counter[str] = Counter()
        self.running: set[str] = set()

    def keep(self, key: str) -> None:
        """``key``'s row stays in the report: keep its outcome whenever it comes."""
        self.head[key] = None

    def add(self, key: str, status: Status, detail: str) -> None:
        if status == Status.STARTED:
            self.running.add(key)
        else:
            self.running.discard(key)
            self.final[status.value] += 1
        if key in self.head:
            self.head[key] = (status, detail)
            return
        self.recent[key] = (status, detail)
        self.recent.move_to_end(key)
        if len(self.recent) > self.limit:
            self.recent.popitem(last=False)

    def resolve(self, row: _T) -> _T:
        """An action row with its recorded outcome; any other row as it is."""
        if not isinstance(row, Action):
            return row
        found = self.head.get(row.key) or self.recent.get(row.key)
        return row if found is None else replace(row, outcome=found[0], outcome_detail=found[1])

    def counts(self) -> tuple[tuple[str, int], ...]:
        counted = Counter(self.final)
        if self.running:
            counted[Status.STARTED.value] = len(self.running)
        return sorted_items(counted)


# --- the incident ------------------------------------------------------------------


class Building:
    """An incident while the stream runs; frozen into :class:`Incident` on demand."""

    def __init__(
        self, incident: str, share: str, opened: Transition, first: FirstFailure, limit: int
    ) -> None:
        self.id = incident
        self.share = share
        self.opened_by = opened.reason
        self.first = first
        self.onset = opened.cause.time if opened.cause else opened.time
        # The engine stands in 0.0 for the time of a line when no line had one yet.
        self.clock_known = first.time is not None or self.onset != 0.0
        self.entries: _Capped[Entry | Action | Seen] = _Capped(limit, incident)
        self.actions: _Capped[Action] = _Capped(limit, incident)
        self.lead_up: tuple[Entry, ...] = ()
        self.decisions = 0
        self.tally = Tally()
        self.first_at: dict[str, float] = {}
        self.detected: Action | None = None
        self.first_heal: Action | None = None
        self.max_delay = 0.0
        self.circuits: list[Circuit] = []
        self.circuits_total = 0
        self.recovered_at: float | None = None
        self.recovered_by: str | None = None
        self.recovery_where: str | None = None
        self.last_seen = opened.time
        self.kinds: Counter[str] = Counter()
        self.hints: dict[str, str] = {}
        self.outcomes = Outcomes(limit)
        self.began: Began | None = None

    def note_hints(self, event: Event) -> None:
        for name, text in hints(event):
            self.hints.setdefault(name, text)

    def add_event(self, seen: Seen) -> None:
        reported = REPORTED_BEFORE.get(seen.event.kind)
        if reported is not None and seen.event.time is not None and self.clock_known:
            seconds, why = reported
            if seen.at - seconds < self.onset:
                self.onset = seen.at - seconds
                self.began = Began(self.onset, seen.where, why)
        self.entries.add(seen)
        self.kinds[seen.event.kind] += 1
        self.last_seen = max(self.last_seen, seen.at)
        self.note_hints(seen.event)

    def _add_output(self, row: Entry | Action) -> None:
        """A response to the last kept event stays with it: bounded by a rule's actions."""
        head = self.entries.head
        self.entries.add(row, follows=bool(head) and head[-1].where == row.where)
        self.last_seen = max(self.last_seen, row.at)

    def add_transition(self, seq: int, tr: Transition) -> None:
        where = cause_where(tr.cause)
        entry = Entry(
            seq=seq,
            time=tr.time,
            at=tr.time,
            where=where,
            incident=self.id,
            what=f"phase {tr.before} → {tr.after}",
            detail=tr.reason + (f" ({tr.cause.kind})" if tr.cause else ""),
            type="transition",
        )
        self._add_output(entry)
        if tr.after == Phase.CIRCUIT_OPEN:
            self.circuits_total += 1
            if len(self.circuits) < _CIRCUITS_KEPT:
                self.circuits.append(Circuit(tr.time, tr.reason, where))
        if tr.after == Phase.HEALTHY:
            self.recovered_at = tr.time
            self.recovered_by = tr.reason
            self.recovery_where = where

    def add_decision(self, action: Action) -> None:
        self._add_output(action)
        kept = len(self.actions.head)
        self.actions.add(action)
        if len(self.actions.head) > kept:
            self.outcomes.keep(action.key)
        self.decisions += 1
        self.tally.add(action.action, action.suppressed)
        if self.detected is None:
            self.detected = action
        if action.suppressed is not None:
            return
        self.first_at.setdefault(action.action, action.time)
        self.max_delay = max(self.max_delay, action.delay)
        if self.first_heal is None and action.action in HEALING:
            self.first_heal = action

    def freeze(self) -> Incident:
        return Incident(
            id=self.id,
            share=self.share,
            opened_by=self.opened_by,
            first_failure=self.first,
            onset=self.onset,
            detected=self.detected,
            first_heal=self.first_heal,
            recovered_at=self.recovered_at,
            recovered_by=self.recovered_by,
            recovery_where=self.recovery_where,
            last_seen=self.last_seen,
            lead_up=self.lead_up,
            entries=tuple(_entry(self.outcomes.resolve(r), self.id) for r in self.entries.head),
            collapsed=self.entries.collapsed(),
            tail=tuple(_entry(self.outcomes.resolve(r), self.id) for r in self.entries.tail),
            actions=tuple(self.outcomes.resolve(a) for a in self.actions.head),
            actions_collapsed=self.actions.collapsed(),
            actions_tail=tuple(self.outcomes.resolve(a) for a in self.actions.tail),
            decisions=self.decisions,
            would_run=sorted_items(self.tally.would),
            suppressed=sorted_items(self.tally.suppressed),
            suppressed_reasons=sorted_items(self.tally.reasons),
            outcomes=self.outcomes.counts(),
            first_action_at=sorted_items(self.first_at),
            max_delay=self.max_delay,
            circuits=tuple(self.circuits),
            circuits_total=self.circuits_total,
            event_counts=sorted_items(self.kinds),
            hints=tuple(self.hints.values()),
            clock_known=self.clock_known,
            began=self.began,
        )


def _entry(row: Entry | Action | Seen, incident: str) -> Entry:
    """A timeline row; decisions and events are kept as they came until shown."""
    if isinstance(row, Entry):
        return row
    if isinstance(row, Seen):
        return event_entry(row, incident)
    return Entry(
        seq=row.seq,
        time=row.time,
        at=row.time,
        where=row.where,
        incident=incident,
        what=row.what,
        detail=_decision_detail(row),
        type="decision",
    )


def event_entry(seen: Seen, incident: str) -> Entry:
    e = seen.event
    return Entry(
        seq=seen.seq,
        time=stamp(e.time),
        at=seen.at,
        where=seen.where,
        incident=incident,
        what=e.kind,
        detail=clip(e.message or e.raw),
        type="event",
    )


def _decision_detail(a: Action) -> str:
    parts = [f"key {a.key}", f"rule {a.rule}"]
    if a.delay > 0:
        parts.append(f"not before +{a.delay:.3f} s (backoff attempt {a.attempt})")
    if a.after:
        parts.append(f"after {a.after}")
    parts.append(a.result)
    return "; ".join(parts)
