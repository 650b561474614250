"""Folding the replay stream, one item at a time, into a :class:`Postmortem`."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable

from healer.engine.model import DEFAULT_SHARE, Cause, Decision, Phase, Status, Transition
from healer.events import Event
from healer.parse import ClockNote
from healer.report._building import Building, Outcomes, Seen, Tally, event_entry, sorted_items
from healer.report._format import TIMER, cause_where, stamp
from healer.report.results import (
    LEAD_UP_S,
    Action,
    FirstFailure,
    Postmortem,
    Stats,
    since,
)
from healer.timeline import Outcome, TimelineItem

__all__ = ["Collector"]

_LEAD_UP_MAX = 5
_RECENT = 32  # events remembered per share, to find the one that opened an incident
_RECENT_PER_KIND = 4  # and per (share, kind), for causes older than that (pair rules)
_OUTSIDE_KEPT = 20
_CLOCKS_KEPT = 16


class Collector:
    """Folds the stream of :func:`healer.pipeline.decide` into a :class:`Postmortem`.

    Feed every item with :meth:`add`, in stream order (each event before what it
    caused); unknown records are ignored, what the clocks said is kept for the header.
    ``max_entries`` bounds each incident's timeline and action list (the first three
    quarters and the last quarter are kept, the middle is counted); ``max_incidents``
    bounds how many incidents are detailed (all are counted).

    ``recorded``: the stream is a journal as it was written, whose decisions ran; each
    action shows the outcome its journal records (an :class:`Outcome` item, which may
    come after the incident closed: a remount ends after the share is healthy again).
    Otherwise the decisions are the replay's own and would run.
    """

    def __init__(
        self, *, max_entries: int = 200, max_incidents: int = 100, recorded: bool = False
    ) -> None:
        if max_entries < 4 or max_incidents < 1:
            raise ValueError("max_entries must be at least 4 and max_incidents at least 1")
        self.max_entries = max_entries
        self.max_incidents = max_incidents
        self.recorded = recorded
        self._seq = 0
        self._clock = float("-inf")
        self._first: float | None = None
        self._last: float | None = None
        self._events = 0
        self._sources: Counter[str] = Counter()
        self._kinds: Counter[str] = Counter()
        self._shares: set[str] = set()
        self._aliases: dict[str, str] = {}
        self._recent: dict[str, deque[Seen]] = {}
        self._recent_kind: dict[tuple[str, str], deque[Seen]] = {}
        self._previous: Seen | None = None  # the event whose outputs arrive now
        self._open: dict[str, Building] = {}  # share -> its open incident
        self._counted: dict[str, Building] = {}  # open but beyond max_incidents
        self._done: list[Building] = []  # frozen at finish(): outcomes may still come
        self._opened = 0
        self._recovered = 0
        self._ttd = Stats()
        self._ttr = Stats()
        self._decisions = 0
        self._tally = Tally()
        self._circuits = 0
        self._outside: list[Action] = []
        self._outside_total = 0
        self._results = Outcomes(_OUTSIDE_KEPT)  # every outcome counted; outside rows kept
        self._awaiting: dict[str, Building | None] = {}  # key -> where its row is
        self._clocks: list[ClockNote] = []
        self._clocks_total = 0

    def add(self, item: TimelineItem) -> None:
        """Take the next item of the stream."""
        if isinstance(item, Event):
            self._event(item)
        elif isinstance(item, Decision):
            self._decision(item)
        elif isinstance(item, Transition):
            self._transition(item)
        elif isinstance(item, Outcome):
            self._outcome(item)
        elif isinstance(item, ClockNote):
            self._clocks_total += 1
            if len(self._clocks) < _CLOCKS_KEPT:
                self._clocks.append(item)

    # --- events ------------------------------------------------------------------

    def _share(self, name: str | None) -> str:
        """The share the engine files a name under (a socket's tag once it is known)."""
        return DEFAULT_SHARE if name is None else self._aliases.get(name, name)

    def _event(self, event: Event) -> None:
        self._seq += 1
        self._events += 1
        self._sources[event.source] += 1
        self._kinds[event.kind] += 1
        time = stamp(event.time)
        if time is not None:
            self._first = time if self._first is None else min(self._first, time)
            self._last = time if self._last is None else max(self._last, time)
            self._clock = max(self._clock, time)
        at = time if time is not None else (self._clock if self._clock > float("-inf") else 0.0)
        tag = getattr(event, "tag", None)
        socket = getattr(event, "socket", None)
        if event.kind == "FsDeviceCreating" and tag and socket:
            self._aliases[socket] = tag
        share = self._share(event.share)
        self._shares.add(share)
        seen = Seen(self._seq, at, event)
        self._recent.setdefault(share, deque(maxlen=_RECENT)).append(seen)
        by_kind = self._recent_kind.setdefault((share, event.kind), deque(maxlen=_RECENT_PER_KIND))
        by_kind.append(seen)
        self._previous = seen
        building = self._open.get(share) or self._counted.get(share)
        if building is not None:
            building.add_event(seen)

    def _find(self, share: str, cause: Cause | None) -> Seen | None:
        if cause is None:
            return None
        pools: list[Iterable[Seen]] = [
            self._recent.get(share, ()),
            self._recent_kind.get((share, cause.kind), ()),
        ]
        for pool in pools:
            for seen in pool:
                e = seen.event
                if (e.source, e.offset, e.kind) == (cause.source, cause.offset, cause.kind):
                    return seen
        return None

    # --- phase changes -----------------------------------------------------------

    def _transition(self, tr: Transition) -> None:
        self._seq += 1
        self._shares.add(tr.share)
        building = self._current(tr.share, tr.incident)
        if building is None and tr.before == Phase.HEALTHY:
            building = self._open_incident(tr)
        if building is None:
            return
        building.add_transition(self._seq, tr)
        if tr.after == Phase.CIRCUIT_OPEN:
            self._circuits += 1
        if tr.after == Phase.HEALTHY:
            detailed = self._open.get(tr.share) is building
            (self._open if detailed else self._counted).pop(tr.share, None)
            self._finish(building, detailed=detailed)

    def _current(self, share: str, incident: str) -> Building | None:
        for pool in (self._open, self._counted):
            building = pool.get(share)
            if building is not None and building.id == incident:
                return building
        return None

    def _open_incident(self, tr: Transition) -> Building:
        self._opened += 1
        seen = self._find(tr.share, tr.cause)
        building = Building(tr.incident, tr.share, tr, _first_failure(seen, tr), self.max_entries)
        # A share can be left open (a circuit opened by an info rule reuses the id).
        for pool in (self._open, self._counted):
            stale = pool.pop(tr.share, None)
            if stale is not None:
                self._finish(stale, detailed=pool is self._open)
        detailed = self._opened <= self.max_incidents
        (self._open if detailed else self._counted)[tr.share] = building
        if seen is not None and detailed:
            before = [
                s
                for s in self._recent.get(tr.share, ())
                if s.seq < seen.seq and s.at >= seen.at - LEAD_UP_S
            ][-_LEAD_UP_MAX:]
            building.lead_up = tuple(event_entry(s, tr.incident) for s in before)
            for s in before:
                building.note_hints(s.event)
        # The events that led here arrived before this transition: attach them now.
        attach = {s.seq: s for s in (seen, self._previous) if s is not None}
        for seq in sorted(attach):
            s = attach[seq]
            if self._share(s.event.share) == tr.share and (seen is None or seq >= seen.seq):
                building.add_event(s)
        return building

    def _finish(self, b: Building, *, detailed: bool) -> None:
        if b.recovered_at is not None:
            self._recovered += 1
        self._ttd = self._ttd.plus(_ttd(b))
        self._ttr = self._ttr.plus(since(b.clock_known, b.onset, b.recovered_at))
        if detailed:
            self._done.append(b)

    # --- decisions ---------------------------------------------------------------

    def _decision(self, d: Decision) -> None:
        self._seq += 1
        self._decisions += 1
        self._shares.add(d.share)
        self._tally.add(d.action, d.suppressed)
        action = Action(
            seq=self._seq,
            key=d.key,
            action=d.action,
            rule=d.rule,
            time=d.time,
            not_before=d.not_before,
            after=d.after,
            attempt=d.attempt,
            suppressed=d.suppressed,
            cause_kind=d.cause.kind if d.cause else None,
            where=cause_where(d.cause),
            # A replay's own decision would run; a recorded one waits for its outcome.
            outcome=None if self.recorded or d.suppressed else Status.WOULD_RUN,
        )
        building = self._current(d.share, d.incident)
        if self.recorded and d.suppressed is None:
            self._awaiting[d.key] = building
        if building is None:
            self._outside_total += 1
            if len(self._outside) < _OUTSIDE_KEPT:
                self._outside.append(action)
                self._results.keep(d.key)
            return
        building.add_decision(action)

    def _outcome(self, o: Outcome) -> None:
        """A recorded outcome, filed with its decision's row wherever that is now."""
        self._results.add(o.key, o.status, o.detail)
        if o.key not in self._awaiting:
            return  # its decision is not in the stream (an older, deleted segment)
        building = (
            self._awaiting[o.key] if o.status == Status.STARTED else self._awaiting.pop(o.key)
        )
        if building is not None:
            building.outcomes.add(o.key, o.status, o.detail)

    # --- the result --------------------------------------------------------------

    def finish(self) -> Postmortem:
        """The report so far; the collector can go on taking items afterwards."""
        incidents = [building.freeze() for building in (*self._done, *self._open.values())]
        incidents.sort(key=lambda i: (i.onset, i.id))
        ttd = self._ttd  # open incidents count for detection, not for recovery
        for building in (*self._open.values(), *self._counted.values()):
            ttd = ttd.plus(_ttd(building))
        return Postmortem(
            first_time=self._first,
            last_time=self._last,
            events=self._events,
            sources=sorted_items(self._sources),
            shares=tuple(sorted(self._shares)),
            kinds=sorted_items(self._kinds),
            incidents=tuple(incidents),
            incidents_total=self._opened,
            recovered_total=self._recovered,
            decisions_total=self._decisions,
            would_run=sorted_items(self._tally.would),
            suppressed=sorted_items(self._tally.suppressed),
            suppressed_reasons=sorted_items(self._tally.reasons),
            circuits_opened=self._circuits,
            outcomes=self._results.counts(),
            recorded=self.recorded,
            ttd=ttd,
            ttr=self._ttr,
            outside=tuple(self._results.resolve(a) for a in self._outside),
            outside_total=self._outside_total,
            max_incidents=self.max_incidents,
            max_entries=self.max_entries,
            clocks=tuple(self._clocks),
            clocks_total=self._clocks_total,
        )


def _ttd(b: Building) -> float | None:
    return since(b.clock_known, b.onset, b.detected)


def _first_failure(seen: Seen | None, tr: Transition) -> FirstFailure:
    cause = tr.cause
    if seen is not None:
        e = seen.event
        return FirstFailure(
            kind=e.kind,
            time=stamp(e.time),
            at=cause.time if cause is not None else seen.at,
            source=e.source,
            line=e.line,
            offset=e.offset,
            raw=e.raw,
            message=e.message,
        )
    if cause is None:  # cannot happen with the engine's rules; keep the report whole
        return FirstFailure(tr.reason, tr.time, tr.time, TIMER, 0, 0, "", "")
    return FirstFailure(
        cause.kind, cause.time, cause.time, cause.source, cause.line, cause.offset, "", ""
    )
