"""What a report is made of: frozen rows, incidents and the postmortem as a whole."""

from __future__ import annotations

from dataclasses import dataclass

from healer.engine.model import Status
from healer.parse import ClockNote
from healer.report._format import cite

__all__ = [
    "LEAD_UP_S",
    "Action",
    "Began",
    "Circuit",
    "Collapsed",
    "Entry",
    "FirstFailure",
    "Incident",
    "Postmortem",
    "Stats",
    "since",
]

LEAD_UP_S = 60.0
"""How far before the onset the report looks for context events of the same share."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One timeline row: an event, a decision or a phase change, and where it came from.

    ``where`` is ``source:line`` of the event, or of the cause for decisions and phase
    changes (``(timer)`` for a circuit retry, which no line caused). ``at`` orders rows:
    the event time, or for an event without one the last time seen before it.
    """

    seq: int
    time: float | None
    at: float
    where: str
    incident: str
    what: str
    detail: str
    type: str  # "event", "decision" or "transition"


@dataclass(frozen=True, slots=True)
class Collapsed:
    """Rows folded away to bound memory: ``what`` happened ``count`` times in between."""

    seq: int
    incident: str
    what: str
    count: int
    first: float
    last: float
    first_where: str
    last_where: str


@dataclass(frozen=True, slots=True)
class Action:
    """One decision, as the action audit shows it.

    ``outcome`` is what became of it: ``would_run`` for a decision a replay made,
    the last status a journal recorded for it (``started`` when it never ended),
    or None when the journal holds no outcome at all. Suppressed decisions have none.
    """

    seq: int
    key: str
    action: str
    rule: str
    time: float
    not_before: float
    after: str | None
    attempt: int
    suppressed: str | None
    cause_kind: str | None
    where: str
    outcome: Status | None = None
    outcome_detail: str = ""

    @property
    def at(self) -> float:
        return self.time

    @property
    def what(self) -> str:
        return f"→ {self.action}" + (" (suppressed)" if self.suppressed else "")

    @property
    def delay(self) -> float:
        """Seconds between the decision and the earliest time it may run (backoff)."""
        return round(self.not_before - self.time, 6)

    @property
    def result(self) -> str:
        """The outcome in words, as the audit's Outcome column shows it."""
        if self.suppressed:
            return f"suppressed: {self.suppressed}"
        if self.outcome is None:
            return "no outcome recorded"
        words = _OUTCOME_WORDS.get(self.outcome, self.outcome)
        return f"{words}: {self.outcome_detail}" if self.outcome_detail else words


_OUTCOME_WORDS = {
    Status.WOULD_RUN: "would run",
    Status.STARTED: "started, no end recorded",
    Status.TIMED_OUT: "timed out",
}


@dataclass(frozen=True, slots=True)
class Circuit:
    """The share's circuit opened: healing stops, alerts go out, retries are slow."""

    time: float
    rule: str
    where: str


@dataclass(frozen=True, slots=True)
class FirstFailure:
    """The event that made a rule open the incident: the onset."""

    kind: str
    time: float | None  # the line's own time; None when the line has none
    at: float  # the time the engine used (the last known time for a line without one)
    source: str
    line: int
    offset: int
    raw: str
    message: str

    @property
    def where(self) -> str:
        return cite(self.source, self.line)


@dataclass(frozen=True, slots=True)
class Stats:
    """Count, mean and maximum of a duration over incidents, in seconds."""

    count: int = 0
    total: float = 0.0
    longest: float | None = None

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    def plus(self, value: float | None) -> Stats:
        if value is None:
            return self
        longest = value if self.longest is None else max(self.longest, value)
        return Stats(self.count + 1, self.total + value, longest)


def since(known: bool, onset: float, then: Action | float | None) -> float | None:
    """Seconds from the onset to ``then``; None when either is unknown."""
    if not known or then is None:
        return None
    return round((then.time if isinstance(then, Action) else then) - onset, 6)


@dataclass(frozen=True, slots=True)
class Began:
    """An onset earlier than the first failure's line, because a line says so: a
    connect loop that "gave up after trying for 1 minute" began a minute before."""

    time: float
    where: str
    why: str


@dataclass(frozen=True, slots=True)
class Incident:
    """One incident of one share, from its first failure to its recovery (or the log end)."""

    id: str
    share: str
    opened_by: str  # the rule that opened it
    first_failure: FirstFailure
    onset: float
    detected: Action | None  # the first decision
    first_heal: Action | None  # the first healing action that would run
    recovered_at: float | None
    recovered_by: str | None  # the recovery event's kind
    recovery_where: str | None
    last_seen: float
    lead_up: tuple[Entry, ...]
    entries: tuple[Entry, ...]
    collapsed: tuple[Collapsed, ...]
    tail: tuple[Entry, ...]
    actions: tuple[Action, ...]
    actions_collapsed: tuple[Collapsed, ...]
    actions_tail: tuple[Action, ...]
    decisions: int
    would_run: tuple[tuple[str, int], ...]
    suppressed: tuple[tuple[str, int], ...]
    suppressed_reasons: tuple[tuple[str, int], ...]
    outcomes: tuple[tuple[str, int], ...]  # recorded outcomes by status (journal)
    first_action_at: tuple[tuple[str, float], ...]
    max_delay: float
    circuits: tuple[Circuit, ...]
    circuits_total: int
    event_counts: tuple[tuple[str, int], ...]
    hints: tuple[str, ...]
    clock_known: bool  # False: no line up to the onset had a time; durations are unknown
    began: Began | None = None  # the onset a line reported, when before the first failure

    @property
    def recovered(self) -> bool:
        return self.recovered_at is not None

    @property
    def ttd(self) -> float | None:
        """Time to detect: the first decision's time minus the onset."""
        return since(self.clock_known, self.onset, self.detected)

    @property
    def time_to_heal(self) -> float | None:
        """The first healing action's decision time minus the onset."""
        return since(self.clock_known, self.onset, self.first_heal)

    @property
    def ttr(self) -> float | None:
        """Time to recover: the recovery event's time minus the onset."""
        return since(self.clock_known, self.onset, self.recovered_at)

    @property
    def end(self) -> float:
        """The incident's end for matching: recovery, else open to the end of the log."""
        return self.recovered_at if self.recovered_at is not None else float("inf")


@dataclass(frozen=True, slots=True)
class Postmortem:
    """Everything the renderers need, and nothing that depends on when it was made."""

    first_time: float | None
    last_time: float | None
    events: int
    sources: tuple[tuple[str, int], ...]
    shares: tuple[str, ...]
    kinds: tuple[tuple[str, int], ...]
    incidents: tuple[Incident, ...]  # the detailed ones, in onset order
    incidents_total: int
    recovered_total: int
    decisions_total: int
    would_run: tuple[tuple[str, int], ...]
    suppressed: tuple[tuple[str, int], ...]
    suppressed_reasons: tuple[tuple[str, int], ...]
    circuits_opened: int
    outcomes: tuple[tuple[str, int], ...]  # recorded outcomes by status (journal)
    recorded: bool  # a journal as it was written: actions ran, outcomes are theirs
    ttd: Stats
    ttr: Stats
    outside: tuple[Action, ...]  # decisions of no open incident (first few)
    outside_total: int
    max_incidents: int
    max_entries: int
    clocks: tuple[ClockNote, ...] = ()  # what the sources' clocks said (first few)
    clocks_total: int = 0

    @property
    def not_recovered(self) -> int:
        return self.incidents_total - self.recovered_total
