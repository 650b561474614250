"""Folding a journal back into the state a runner resumes from.

The journal's events go through the same :meth:`Engine.step` that decided them, so
the engine state after a restart is the state before it. Decisions and outcomes say
what is still open; positions say where each source resumes. Decisions the rules
derive from the events but that are missing from the journal (a write torn by a
crash) are returned as ``lost``, to be journaled and run now. This is pure: it reads
records, never files.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from healer.engine import Engine
from healer.engine.model import (
    COMMANDS,
    FINAL,
    Command,
    Decision,
    EngineState,
    Output,
    Status,
    Tick,
)
from healer.journal.records import (
    DecisionRecord,
    EventRecord,
    NoteRecord,
    OperatorRecord,
    OutcomeRecord,
    PositionRecord,
    Record,
    Snapshot,
    StartRecord,
    TickRecord,
)
from healer.parse import Checkpoint
from healer.sources.tailtypes import TailPosition

__all__ = ["END_OF_INPUT", "Folded", "fold"]

END_OF_INPUT = "end of input"
"""The note a runner journals when a replay's input ends (see Runner.finish)."""

_OUTCOMES_KEPT = 4096  # outcomes remembered: a later step may follow one of them


@dataclass(slots=True)
class Folded:
    """What a journal says, ready for a runner."""

    state: EngineState
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    tails: dict[str, TailPosition] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    open: dict[str, Decision] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)
    failed: dict[str, bool] = field(default_factory=dict)  # finished key -> not succeeded
    lost: list[Decision] = field(default_factory=list)
    notes: list[NoteRecord] = field(default_factory=list)


def fold(engine: Engine, snapshot: Snapshot | None, records: Iterable[Record]) -> Folded:
    """The state after ``snapshot`` and ``records``, under ``engine``'s rules."""
    result = Folded(engine.initial())
    if snapshot is not None:
        _load(engine, snapshot, result)
    journaled: set[str] = set(result.open)
    derived: dict[str, Decision] = {}
    # Decisions are compared only where the journal was written with the rules in
    # force now: other rules decided other things, on purpose.
    same_rules = snapshot is None or snapshot.rules in ("", engine.rules.digest)

    def derive(outputs: list[Output]) -> None:
        if same_rules:
            for out in outputs:
                if isinstance(out, Decision) and out.suppressed is None:
                    derived[out.key] = out

    for record in records:
        match record:
            case StartRecord(rules=rules):
                same_rules = rules == engine.rules.digest
                if not same_rules:
                    derived.clear()
            case EventRecord(event=event, stream=stream):
                result.state, outputs = engine.step(result.state, event)
                derive(outputs)
                result.seen[stream or event.source] = event.offset
            case OperatorRecord(command=command, share=share, uid=uid, time=float() as at) if (
                share is not None and command in COMMANDS
            ):
                result.state, outputs = engine.step(result.state, Command(at, command, share, uid))
                derive(outputs)
            case TickRecord(time=time):
                result.state, outputs = engine.step(result.state, Tick(time))
                derive(outputs)
            case DecisionRecord(decision=decision):
                journaled.add(decision.key)
                if decision.suppressed is None:
                    result.open[decision.key] = decision
            case OutcomeRecord(key=key, status=status):
                if status == Status.STARTED:
                    result.started.add(key)
                elif status in FINAL:
                    result.open.pop(key, None)
                    result.started.discard(key)
                    result.failed[key] = status != Status.SUCCEEDED
                    if len(result.failed) > _OUTCOMES_KEPT:
                        del result.failed[next(iter(result.failed))]
            case PositionRecord(source=source, checkpoint=checkpoint, tail=tail):
                result.checkpoints[source] = checkpoint
                if tail is not None:
                    result.tails[source] = tail
            case NoteRecord(what=what) if what == END_OF_INPUT:
                result.state, _ = engine.finish(result.state)
            case _:
                pass  # transitions are derived again; notes are history
    result.lost = [d for key, d in derived.items() if key not in journaled]
    return result


def _load(engine: Engine, snapshot: Snapshot, result: Folded) -> None:
    state = snapshot.state
    if snapshot.rules and snapshot.rules != engine.rules.digest:
        # Pending windows and pairs of rules that no longer exist cannot fire: drop
        # them, and say so in the journal.
        state, dropped = engine.adopt(state)
        result.notes += [
            NoteRecord("dropped", f"{what} (rules {snapshot.rules} -> {engine.rules.digest})")
            for what in dropped
        ]
    result.state = state
    result.checkpoints = dict(snapshot.checkpoints)
    result.tails = dict(snapshot.tails)
    result.seen = dict(snapshot.seen)
    result.open = {d.key: d for d in snapshot.open}
    result.started = set(snapshot.started)
