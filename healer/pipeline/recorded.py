"""A journal read as it was written: its events, decisions, phase changes and outcomes.

``healer replay --journal`` reports what happened, not what today's rules would have
done: the records come back typed (:func:`healer.journal.read_records`) and go out as
the timeline items they were, each outcome paired with the decision it answers, and
the rules of each run are the digests its ``StartRecord``s name. Deciding the events
again under other rules is a separate step the caller asks for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from healer.engine.model import FINAL, Decision, Status
from healer.errors import InputError
from healer.events import Event
from healer.journal import (
    DecisionRecord,
    EventRecord,
    OutcomeRecord,
    Record,
    StartRecord,
    TransitionRecord,
    read_records,
)
from healer.observe import NULL_OBSERVER, Observer
from healer.timeline import Outcome, TimelineItem

__all__ = ["AsRecorded", "JournalTally", "journal_records"]


@dataclass(slots=True)
class JournalTally:
    """What a journal holds, counted while it is read.

    ``rules`` has one digest per run whose rules differ from the run before it, in
    journal order: more than one means the rules changed between runs.
    """

    records: int = 0
    events: int = 0
    kinds: Counter[str] = field(default_factory=Counter)
    decisions: int = 0
    suppressed: int = 0
    transitions: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    rules: list[str] = field(default_factory=list)

    def count(self, record: Record) -> None:
        self.records += 1
        match record:
            case EventRecord(event=event):
                self.events += 1
                self.kinds[event.kind] += 1
            case DecisionRecord(decision=decision):
                self.decisions += 1
                self.suppressed += decision.suppressed is not None
            case TransitionRecord():
                self.transitions += 1
            case OutcomeRecord(status=status):
                self.outcomes[status.value] += 1
            case StartRecord(rules=digest):
                if not self.rules or self.rules[-1] != digest:
                    self.rules.append(digest)


def journal_records(path: str | Path) -> Iterator[Record]:
    """Every record of a journal directory or segment file; InputError if it is none."""
    root = Path(path)
    if not root.exists():
        raise InputError(str(path), "no such journal", "name a journal directory or segment file")
    if root.is_dir() and not any(root.glob("segment-*.jsonl")):
        raise InputError(str(path), "no journal segments in it", "name a healer journal directory")
    return read_records(root)


class AsRecorded:
    """Journal records as timeline items; the observer is told what they say happened.

    An outcome record names only its key: it is paired with its decision, kept until
    its final status arrives. A failure is counted once per share for the decisions
    an event caused (the journal does not say which rules were informational).
    """

    def __init__(self, observer: Observer = NULL_OBSERVER) -> None:
        self.observer = observer
        self._open: dict[str, Decision] = {}
        self._event: Event | None = None
        self._failed: set[str] = set()

    def item(self, record: Record) -> TimelineItem | None:
        """The item ``record`` is on the timeline; None for bookkeeping records."""
        observer = self.observer
        match record:
            case EventRecord(event=event):
                self._event, self._failed = event, set()
                observer.event(event)
                return event
            case DecisionRecord(decision=decision):
                observer.decision(decision)
                self._failure(decision)
                if decision.suppressed is None:
                    self._open[decision.key] = decision
                return decision
            case TransitionRecord(transition=transition):
                observer.transition(transition)
                return transition
            case OutcomeRecord(key=key, status=status, detail=detail):
                return self._outcome(key, status, detail)
        return None

    def _failure(self, decision: Decision) -> None:
        event, cause = self._event, decision.cause
        if event is None or cause is None or decision.share in self._failed:
            return
        if (cause.source, cause.offset, cause.kind) == (event.source, event.offset, event.kind):
            self._failed.add(decision.share)
            self.observer.failure(decision.share, event.kind)

    def _outcome(self, key: str, status: Status, detail: str) -> Outcome:
        final = status in FINAL
        decision = self._open.pop(key, None) if final else self._open.get(key)
        if decision is not None:
            if status == Status.STARTED:
                self.observer.action_started(decision)
            elif final:
                self.observer.action_finished(decision, status, None, detail)
        return Outcome(key, status, detail, decision)
