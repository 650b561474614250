"""The imperative shell around the engine: journal first, then act.

For each batch of events from a source the runner steps the engine, appends the
events, the decisions and the source position to the journal in one write (made
durable), and only then hands decisions to the executor, journaling ``started``
before and the result after each action. On start it folds the journal back into
engine state (:mod:`healer.fold`) and reconciles every decision that has no final
outcome: never started, it runs (unless its incident has closed: then it is closed
as superseded); started, the checker asks the world whether it was done.

When the journal cannot be written (a full disk, a read-only file system), the
runner keeps the records in memory (bounded) and retries; meanwhile only respawns
run without their decision on disk (virtiofsd must be served), every other action
waits for the journal, and the degraded state is counted and told to the observer.

Replay uses the same runner with no executor: decisions are recorded ``would_run``.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

from healer.engine import Engine
from healer.engine.model import (
    FINAL,
    Action,
    Command,
    Decision,
    EngineState,
    Output,
    Status,
    Tick,
    Transition,
)
from healer.events import Event
from healer.fold import END_OF_INPUT, fold
from healer.journal import (
    DecisionRecord,
    EventRecord,
    Journal,
    NoteRecord,
    OperatorRecord,
    OutcomeRecord,
    PositionRecord,
    Record,
    Snapshot,
    StartRecord,
    TickRecord,
    TransitionRecord,
)
from healer.observe import NULL_OBSERVER, Observer
from healer.parse import Checkpoint
from healer.sources.tailtypes import TailPosition

__all__ = ["Checker", "Executor", "Outcome", "Runner", "RunnerStats", "Verdict"]

_FAILED_KEPT = 4096
RESPAWNS = frozenset({Action.RESPAWN, Action.ENSURE})
BACKLOG_LIMIT = 100_000  # records kept in memory while the journal cannot be written
RETRY_S = 2.0  # how often a broken journal is tried again


Outcome = Status | tuple[Status, str]
"""An action's final status, with why when there is something to say."""


class Executor(Protocol):
    """Runs one decided action; returns its final status (and why).

    ``None`` means the action goes on elsewhere (a worker thread): its outcome comes
    back later through :meth:`Runner.complete`, and nothing waits for it meanwhile.
    """

    def run(self, decision: Decision) -> Outcome | None: ...


Verdict = str
"""What a checker found: ``done``, ``redo`` or ``obsolete``."""


class Checker(Protocol):
    """After a crash: was a started action done? ``done``, ``redo`` or ``obsolete``."""

    def check(self, decision: Decision) -> Verdict: ...


@dataclass(slots=True)
class RunnerStats:
    events: int = 0
    decisions: int = 0
    executed: int = 0
    reconciled: dict[str, int] = field(default_factory=dict)
    superseded: int = 0
    torn_bytes: int = 0
    unjournaled: int = 0  # respawns run while the journal could not be written
    journal_dropped: int = 0  # records lost because the in-memory backlog was full
    failed_events: int = 0  # the engine raised on the event: it decided nothing, counted


class Runner:
    """Engine + journal + executor. Without a journal it keeps nothing (plain replay)."""

    def __init__(
        self,
        engine: Engine,
        journal: Journal | None = None,
        executor: Executor | None = None,
        *,
        checker: Checker | None = None,
        snapshot_every: int = 50_000,
        now: Callable[[], float] | None = None,
        observer: Observer = NULL_OBSERVER,
        identity: StartRecord | None = None,
    ) -> None:
        self.engine = engine
        self.observer = observer  # metrics, logs, tests: told what happens (observe.py)
        self._severity = {rule.id: rule.severity for rule in engine.rules.rules}
        self._started_at: dict[str, float] = {}
        self.now = now  # live: decisions wait for not_before on this clock
        self.journal = journal
        self.executor = executor
        self.checker = checker
        self.identity = identity or StartRecord(rules=engine.rules.digest)
        self.snapshot_every = snapshot_every
        self.state: EngineState = engine.initial()
        self.checkpoints: dict[str, Checkpoint] = {}
        self.tails: dict[str, TailPosition] = {}  # source -> tailer position
        self.seen: dict[str, int] = {}  # stream -> offset of the last journaled event
        self.open: dict[str, Decision] = {}  # decided, no final outcome yet
        self.started: set[str] = set()
        self.stats = RunnerStats()
        self.waiting: list[tuple[float, int, Decision]] = []
        self.running: dict[str, Decision] = {}  # handed to a worker, outcome pending
        self.parked: dict[str, list[Decision]] = {}  # key -> decisions waiting for it
        self.held: list[Decision] = []  # waiting for the journal to be writable again
        self.failed: dict[str, bool] = {}  # executed keys -> did not succeed
        self.last_outcome: dict[str, tuple[Decision, Status, str]] = {}  # share -> latest
        self.backlog: list[Record] = []  # records not yet written (journal fault)
        self._retry_at = 0.0
        self._order = 0
        self._since_snapshot = 0

    @property
    def degraded(self) -> bool:
        """The journal could not be written; records wait in memory."""
        return bool(self.backlog)

    # --- start-up -----------------------------------------------------------------

    def start(self) -> list[Decision]:
        """Fold the journal, reconcile open decisions; returns the ones run now."""
        if self.journal is None:
            return []
        recovered = self.journal.recover()
        self.stats.torn_bytes = recovered.torn_bytes
        folded = fold(self.engine, recovered.snapshot, recovered.records)
        self.state = folded.state
        self.checkpoints, self.tails, self.seen = folded.checkpoints, folded.tails, folded.seen
        self.open, self.started = folded.open, folded.started
        self.failed = folded.failed
        self._observe_state()
        records: list[Record] = [self.identity, *folded.notes]
        records += [DecisionRecord(d) for d in folded.lost]
        self._append(records)
        for decision in folded.lost:  # decided before the crash, but the write was torn
            self.open[decision.key] = decision
        return self._reconcile()

    def _reconcile(self) -> list[Decision]:
        ran = []
        for key in list(self.open):  # in the order decided: a step before its follower
            decision = self.open[key]
            if key in self.started and self.checker is not None:
                verdict = self.checker.check(decision)
                self.stats.reconciled[verdict] = self.stats.reconciled.get(verdict, 0) + 1
                if verdict in ("done", "obsolete"):
                    self.failed[key] = verdict != "done"  # a follower of a done step runs
                    self._outcome(decision, Status.CLOSED, verdict)
                    continue
            elif decision.after is None and not self.engine.is_current(self.state, decision):
                self._supersede(decision)
                continue
            if self.executor is not None:
                self._dispatch(decision)
                ran.append(decision)
        return ran

    def use_engine(self, engine: Engine) -> list[str]:
        """New rules (a reload): the state carries over, fitted to them (see
        :meth:`Engine.adopt`); journaled as a new start under the new digest. Returns
        what had to be dropped, in words."""
        state, dropped = engine.adopt(self.state)
        self.engine, self.state = engine, state
        self._severity = {rule.id: rule.severity for rule in engine.rules.rules}
        self.identity = replace(self.identity, rules=engine.rules.digest)
        self._append([self.identity, *(NoteRecord("dropped", what) for what in dropped)])
        self._observe_state()
        return dropped

    # --- running ------------------------------------------------------------------

    def ingest(
        self,
        events: Iterable[Event],
        position: tuple[str, Checkpoint] | None = None,
        *,
        stream: str | None = None,
        tail: TailPosition | None = None,
        read_at: float | None = None,
    ) -> list[Output]:
        """Step, journal (durably), then act. Events already journaled are skipped.

        ``stream`` names what offsets count in (default: the event's source); a tailed
        log gives each file its own stream, since a rotated file starts again at 0.
        ``tail`` is the tailer's position, journaled with the checkpoint. ``read_at``
        (live) is when the lines were read, on the ``now`` clock: the detection latency.
        """
        records: list[Record] = []
        outputs: list[Output] = []
        for event in events:
            key = stream or event.source
            seen = self.seen.get(key)
            if seen is not None and event.offset <= seen:
                continue  # re-read after a restart: it is in the journal already
            self.seen[key] = event.offset
            try:
                self.state, outs = self.engine.step(self.state, event)
            except Exception:  # an engine bug one event found must not end the healing
                self.stats.failed_events += 1
                continue
            self.stats.events += 1
            self._observe_step(event, outs, read_at)
            if self.journal is not None:
                records.append(EventRecord(event, stream))
                records += [_record(o) for o in outs]
            outputs += outs
        if position is not None:
            source, point = position
            self.checkpoints[source] = point
            if tail is not None:
                self.tails[source] = tail
            if self.journal is not None:
                records.append(PositionRecord(source, point, tail))
        self._observe_state()
        self._append(records)
        self._act(outputs)
        return outputs

    def command(self, command: Command, *, pid: int | None = None) -> list[Output]:
        """An operator's command: stepped, journaled with who gave it, acted on."""
        self.state, outputs = self.engine.step(self.state, command)
        self._observe_step(None, outputs, None)
        self._observe_state()
        given = OperatorRecord(command.command, command.share, command.uid, pid, time=command.time)
        self._append([given, *(_record(o) for o in outputs)])
        self._act(outputs)
        return outputs

    def next_offset(self, stream: str) -> int:
        """The position of the next event healer itself reports on ``stream``.

        A journaled counter, never a clock: a wall clock stepping back must not make
        healer's own report of a death look like one already journaled.
        """
        return self.seen.get(stream, 0) + 1

    def tick(self, time: float) -> list[Output]:
        """Let time pass (live): due timers fire; journaled only when they do."""
        self.state, outputs = self.engine.step(self.state, Tick(time))
        self._observe_step(None, outputs, None)
        self._observe_state()
        if outputs:
            self._append([TickRecord(time), *(_record(o) for o in outputs)])
            self._act(outputs)
        return outputs

    def finish(self) -> list[Output]:
        """The input has ended (a replay): recoveries waiting for their session to last
        are confirmed (see :meth:`Engine.finish`); journaled as an end-of-input note."""
        self.state, outputs = self.engine.finish(self.state)
        self._observe_step(None, outputs, None)
        self._observe_state()
        if outputs:
            self._append([NoteRecord(END_OF_INPUT), *(_record(o) for o in outputs)])
        return outputs

    def next_timer(self) -> float | None:
        """Event time of the engine's next timer (a pair deadline, a circuit retry)."""
        return self.engine.next_due(self.state)

    def _act(self, outputs: list[Output]) -> None:
        for out in outputs:
            if not isinstance(out, Decision):
                continue
            self.stats.decisions += 1
            if out.suppressed is not None:
                continue
            self.open[out.key] = out
            if self.executor is None:
                self._outcome(out, Status.WOULD_RUN, "")
            else:
                self._dispatch(out, fresh=True)
        self._maybe_snapshot()

    def _dispatch(self, decision: Decision, *, fresh: bool = False) -> None:
        """Run now, or wait for ``not_before`` (backoff) and for the step it follows.

        ``fresh``: decided in the batch being ingested. It runs even if a later event
        of the same batch already closed its incident; only a decision that waited
        (for its backoff, or across a restart) can be superseded.
        """
        if self.now is None:
            self._execute(decision, fresh=fresh)
            return
        # The backoff is relative to the decision; logs may run on another clock.
        delay = max(0.0, decision.not_before - decision.time)
        waits_for = decision.after if decision.after in self.open else None
        if delay > 0 or waits_for is not None or self.waiting:
            heapq.heappush(self.waiting, (self.now() + delay, self._order, decision))
            self._order += 1
            return
        self._execute(decision, fresh=fresh)

    def run_due(self) -> list[Decision]:
        """Run the waiting decisions whose time has come, in order (live mode)."""
        ran: list[Decision] = []
        while self.waiting and self.now is not None and self.waiting[0][0] <= self.now():
            _, _, decision = heapq.heappop(self.waiting)
            if decision.key not in self.open:
                continue  # closed meanwhile
            before = decision.after
            if before is not None and before in self.open:
                # Its predecessor has not finished: it runs when that one completes.
                # Other decisions (other shares) are not held up meanwhile.
                self.parked.setdefault(before, []).append(decision)
                continue
            if self._execute(decision):
                ran.append(decision)
        return ran

    def next_due(self) -> float | None:
        """When the earliest waiting decision may run (None: nothing waits)."""
        return self.waiting[0][0] if self.waiting else None

    def _execute(self, decision: Decision, *, fresh: bool = False) -> bool:
        """Run one decision now if it still makes sense; whether it ran."""
        if self.executor is None:
            return False
        before = decision.after
        if before is not None and self.failed.get(before, True):
            # Its predecessor failed, was superseded, or is unknown here.
            self._outcome(decision, Status.CLOSED, f"skipped: {before} did not succeed")
            return False
        # A step that follows one that ran completes its healing even if the incident
        # has closed meanwhile (the remount after a respawn the VMM reconnected to).
        if before is None and not fresh and not self.engine.is_current(self.state, decision):
            self._supersede(decision)
            return False
        if self.degraded and decision.action not in RESPAWNS:
            self.held.append(decision)  # runs once the journal has recorded it
            return False
        if self.degraded:
            self.stats.unjournaled += 1
        self._outcome(decision, Status.STARTED, "")
        self.started.add(decision.key)
        result = self.executor.run(decision)
        if result is None:
            self.running[decision.key] = decision
            return True
        status, detail = (result, "") if isinstance(result, str) else result
        self._finish(decision, status, detail)
        return True

    def _supersede(self, decision: Decision) -> None:
        self.stats.superseded += 1
        share = self.state.shares.get(decision.share)
        now = share.incident if share is not None and share.incident else "none"
        detail = f"superseded: incident {decision.incident} is closed (open now: {now})"
        self._outcome(decision, Status.CLOSED, detail)

    def complete(self, key: str, status: Status, detail: str = "") -> bool:
        """The outcome of an action that ran elsewhere; False if none was pending."""
        decision = self.running.pop(key, None)
        if decision is None:
            return False
        self._finish(decision, status, detail)
        return True

    def _finish(self, decision: Decision, status: Status, detail: str) -> None:
        self.stats.executed += 1
        self.failed[decision.key] = status != Status.SUCCEEDED
        if len(self.failed) > _FAILED_KEPT:  # only recent keys can be an 'after'
            del self.failed[next(iter(self.failed))]
        self._outcome(decision, status, detail)

    def _outcome(self, decision: Decision, status: Status, detail: str) -> None:
        self._observe_outcome(decision, status, detail)
        if status in FINAL:
            self.last_outcome[decision.share] = (decision, status, detail)
            self.open.pop(decision.key, None)
            self.started.discard(decision.key)
            if decision.key not in self.failed:
                self.failed[decision.key] = status != Status.SUCCEEDED
            for follower in self.parked.pop(decision.key, []):  # due now, in order
                when = self.now() if self.now is not None else 0.0
                heapq.heappush(self.waiting, (when, self._order, follower))
                self._order += 1
        if self.journal is not None:
            self._append([OutcomeRecord(decision.key, status, detail)])

    # --- the journal, and what to do when it cannot be written ---------------------------

    def _append(self, records: list[Record]) -> None:
        if self.journal is None or not records:
            return
        if self.backlog:
            self._keep(records)
            self.flush()
            return
        try:
            self.journal.append(records)
        except OSError as exc:
            self.observer.journal_failed(exc)
            self._keep(records)
            self._retry_at = time.monotonic() + RETRY_S
            return
        self.observer.journal_written(len(records))
        self._since_snapshot += len(records)

    def _keep(self, records: list[Record]) -> None:
        room = BACKLOG_LIMIT - len(self.backlog)
        if room < len(records):  # the oldest events go first; decisions are kept
            self.backlog = [r for r in self.backlog if not isinstance(r, EventRecord)]
            room = BACKLOG_LIMIT - len(self.backlog)
            self.stats.journal_dropped += max(0, len(records) - room)
        self.backlog += records[: max(0, room)]

    def flush(self, *, force: bool = False) -> bool:
        """Write what waits in memory, if the journal takes it again; whether it did."""
        if self.journal is None or not self.backlog:
            return True
        if not force and time.monotonic() < self._retry_at:
            return False
        try:
            self.journal.append(self.backlog)
        except OSError as exc:
            self.observer.journal_failed(exc)
            self._retry_at = time.monotonic() + RETRY_S
            return False
        self.observer.journal_written(len(self.backlog))
        self._since_snapshot += len(self.backlog)
        self.backlog = []
        held, self.held = self.held, []
        for decision in held:  # recorded now: they may run
            if decision.key in self.open:
                self._execute(decision)
        return True

    # --- telling the observer ---------------------------------------------------------

    def _observe_step(
        self, event: Event | None, outputs: list[Output], read_at: float | None
    ) -> None:
        """One step's event, decisions and phase changes; whether the event was a failure."""
        observer = self.observer
        if event is not None:
            observer.event(event)
        failed: set[str] = set()
        for out in outputs:
            if isinstance(out, Transition):
                observer.transition(out)
                continue
            observer.decision(out)
            if event is not None and self._severity.get(out.rule, "warning") != "info":
                failed.add(out.share)
        for share in sorted(failed):
            observer.failure(share, event.kind if event is not None else "")
        if outputs and read_at is not None and self.now is not None:
            observer.detected(self.now() - read_at)

    def _observe_state(self) -> None:
        self.observer.state(self.state, self.now() if self.now is not None else self.state.clock)

    def _observe_outcome(self, decision: Decision, status: Status, detail: str = "") -> None:
        if status == Status.STARTED:
            self._started_at[decision.key] = time.monotonic()
            self.observer.action_started(decision)
        elif status in FINAL:
            began = self._started_at.pop(decision.key, None)
            took = None if began is None else time.monotonic() - began
            self.observer.action_finished(decision, status, took, detail)

    def _maybe_snapshot(self) -> None:
        if self._since_snapshot >= self.snapshot_every and not self.degraded:
            self.snapshot()

    def snapshot(self) -> None:
        """Write the folded state as a snapshot, so start-up need not read it all."""
        if self.journal is None or self.degraded:
            return
        self.journal.snapshot(
            Snapshot(
                seq=self.journal.seq,
                state=self.state,
                rules=self.engine.rules.digest,
                checkpoints=dict(self.checkpoints),
                tails=dict(self.tails),
                seen=dict(self.seen),
                open=tuple(self.open.values()),
                started=tuple(sorted(self.started)),
            )
        )
        self._since_snapshot = 0


def _record(output: Output) -> Record:
    return DecisionRecord(output) if isinstance(output, Decision) else TransitionRecord(output)
