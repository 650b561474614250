"""The imperative shell around the engine: journal first, then act.

For each batch of events from a source the runner steps the engine, appends the
events, the decisions and the source checkpoint to the journal in one write (made
durable), and only then hands decisions to the executor, journaling ``started``
before and the result after each action. On start it folds the journal back into
engine state and reconciles every decision that has no final outcome:

- never started: it runs now (it was decided, durable, and never attempted);
- started, no result: the checker looks at the world and the decision is closed
  as done, run again, or closed as obsolete; it is never blindly repeated;
- decided by the rules but missing from the journal (a torn write): journaled and
  treated as never started.

Replay uses the same runner with no executor: decisions are recorded ``would_run``.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from healer.engine.core import (
    Decision,
    Engine,
    EngineState,
    Output,
    Tick,
    Transition,
    decision_from_dict,
    output_to_dict,
    state_from_dict,
    state_to_dict,
)
from healer.events import Event, from_dict, to_dict
from healer.journal import Journal
from healer.observe import NULL_OBSERVER, Observer
from healer.parse import Checkpoint

__all__ = ["Checker", "Executor", "Runner", "RunnerStats"]

_FAILED_KEPT = 4096
FINAL = frozenset({"succeeded", "failed", "timed_out", "closed", "would_run"})


class Executor(Protocol):
    """Runs one decided action; returns ``succeeded``, ``failed``, ``timed_out``, ``closed``.

    ``None`` means the action goes on elsewhere (a worker thread): its outcome comes
    back later through :meth:`Runner.complete`, and nothing waits for it meanwhile.
    """

    def run(self, decision: Decision) -> str | None: ...


class Checker(Protocol):
    """After a crash: was a started action done? ``done``, ``redo`` or ``obsolete``."""

    def check(self, decision: Decision) -> str: ...


@dataclass(slots=True)
class RunnerStats:
    events: int = 0
    decisions: int = 0
    executed: int = 0
    reconciled: dict[str, int] = field(default_factory=dict)
    torn_bytes: int = 0


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
    ) -> None:
        self.engine = engine
        self.observer = observer  # metrics, logs, tests: told what happens (observe.py)
        self._severity = {rule.id: rule.severity for rule in engine.rules.rules}
        self._started_at: dict[str, float] = {}
        self.now = now  # live: decisions wait for not_before on this clock
        self.journal = journal
        self.executor = executor
        self.checker = checker
        self.snapshot_every = snapshot_every
        self.state: EngineState = engine.initial()
        self.checkpoints: dict[str, Checkpoint] = {}
        self.tails: dict[str, dict[str, Any]] = {}  # source -> tailer position
        self.seen: dict[str, int] = {}  # source -> offset of the last journaled event
        self.open: dict[str, Decision] = {}  # decided, no final outcome yet
        self.started: set[str] = set()
        self.stats = RunnerStats()
        self.waiting: list[tuple[float, int, Decision]] = []
        self.running: dict[str, Decision] = {}  # handed to a worker, outcome pending
        self.parked: dict[str, list[Decision]] = {}  # key -> decisions waiting for it
        self.failed: dict[str, bool] = {}  # executed keys -> did not succeed
        self._order = 0
        self._since_snapshot = 0

    # --- start-up -----------------------------------------------------------------

    def start(self) -> list[Decision]:
        """Fold the journal, reconcile open decisions; returns the ones run now."""
        if self.journal is None:
            return []
        recovered = self.journal.recover()
        self.stats.torn_bytes = recovered.torn_bytes
        if recovered.snapshot is not None:
            self._load_snapshot(recovered.snapshot)
        journaled: set[str] = set(self.open)
        derived: dict[str, Decision] = {}
        same_rules = True
        for record in recovered.records:
            kind = record["type"]
            if kind == "start":
                # Decisions are compared only where the journal was written with the
                # rules in force now: other rules decided other things, on purpose.
                same_rules = record.get("rules") == self.engine.rules.digest
                if not same_rules:
                    derived.clear()
            elif kind in ("event", "tick"):
                item: Event | Tick = (
                    from_dict(record["event"]) if kind == "event" else Tick(record["time"])
                )
                self.state, outputs = self.engine.step(self.state, item)
                if same_rules:
                    for out in outputs:
                        if isinstance(out, Decision) and out.suppressed is None:
                            derived[out.key] = out
                if isinstance(item, Event):
                    self.seen[record.get("stream") or item.source] = item.offset
            elif kind == "decision":
                decision = decision_from_dict(record)
                journaled.add(decision.key)
                if decision.suppressed is None:
                    self.open[decision.key] = decision
            elif kind == "outcome":
                if record["status"] == "started":
                    self.started.add(record["key"])
                elif record["status"] in FINAL:
                    self.open.pop(record["key"], None)
                    self.started.discard(record["key"])
            elif kind == "offset":
                self.checkpoints[record["source"]] = Checkpoint.from_dict(record["checkpoint"])
                if "tail" in record:
                    self.tails[record["source"]] = record["tail"]
        self._observe_state()
        lost = [d for key, d in derived.items() if key not in journaled]
        self._append([{"type": "start", "rules": self.engine.rules.digest}])
        if lost:  # decided before the crash, but the write was torn: keep them now
            self._append([output_to_dict(d) for d in lost])
            for decision in lost:
                self.open[decision.key] = decision
        return self._reconcile()

    def _reconcile(self) -> list[Decision]:
        ran = []
        for key in sorted(self.open):
            decision = self.open[key]
            if key in self.started and self.checker is not None:
                verdict = self.checker.check(decision)
                self.stats.reconciled[verdict] = self.stats.reconciled.get(verdict, 0) + 1
                if verdict in ("done", "obsolete"):
                    self._outcome(decision, "closed", verdict)
                    continue
            if self.executor is not None:
                self._dispatch(decision)
                ran.append(decision)
        return ran

    def _load_snapshot(self, snapshot: dict[str, Any]) -> None:
        self.state = state_from_dict(snapshot["state"])
        self.checkpoints = {
            s: Checkpoint.from_dict(c) for s, c in snapshot.get("checkpoints", {}).items()
        }
        self.seen = dict(snapshot.get("seen", {}))
        self.tails = dict(snapshot.get("tails", {}))
        for data in snapshot.get("open", []):
            decision = decision_from_dict(data)
            self.open[decision.key] = decision
        self.started = set(snapshot.get("started", []))

    # --- running ------------------------------------------------------------------

    def ingest(
        self,
        events: Iterable[Event],
        checkpoint: tuple[str, Checkpoint] | None = None,
        *,
        stream: str | None = None,
        tail: dict[str, Any] | None = None,
        read_at: float | None = None,
    ) -> list[Output]:
        """Step, journal (durably), then act. Events already journaled are skipped.

        ``stream`` names what offsets count in (default: the event's source); a tailed
        log gives each file its own stream, since a rotated file starts again at 0.
        ``tail`` is the tailer's position, journaled with the checkpoint. ``read_at``
        (live) is when the lines were read, on the ``now`` clock: the detection latency.
        """
        records: list[dict[str, Any]] = []
        outputs: list[Output] = []
        for event in events:
            key = stream or event.source
            seen = self.seen.get(key)
            if seen is not None and event.offset <= seen:
                continue  # re-read after a restart: it is in the journal already
            self.seen[key] = event.offset
            self.state, outs = self.engine.step(self.state, event)
            self.stats.events += 1
            self._observe_step(event, outs, read_at)
            if self.journal is not None:
                record: dict[str, Any] = {"type": "event", "event": to_dict(event)}
                if stream is not None:
                    record["stream"] = stream
                records.append(record)
                records += [output_to_dict(o) for o in outs]
            outputs += outs
        if checkpoint is not None:
            source, point = checkpoint
            self.checkpoints[source] = point
            if tail is not None:
                self.tails[source] = tail
            if self.journal is not None:
                offset: dict[str, Any] = {
                    "type": "offset",
                    "source": source,
                    "checkpoint": point.to_dict(),
                }
                if tail is not None:
                    offset["tail"] = tail
                records.append(offset)
        self._observe_state()
        self._append(records)
        self._act(outputs)
        return outputs

    def tick(self, time: float) -> list[Output]:
        """Let time pass (live): due timers fire; journaled only when they do."""
        self.state, outputs = self.engine.step(self.state, Tick(time))
        self._observe_step(None, outputs, None)
        self._observe_state()
        if outputs:
            self._append([{"type": "tick", "time": time}, *(output_to_dict(o) for o in outputs)])
            self._act(outputs)
        return outputs

    def _act(self, outputs: list[Output]) -> None:
        for out in outputs:
            if not isinstance(out, Decision):
                continue
            self.stats.decisions += 1
            if out.suppressed is not None:
                continue
            self.open[out.key] = out
            if self.executor is None:
                self._outcome(out, "would_run", "")
            else:
                self._dispatch(out)
        self._maybe_snapshot()

    def _dispatch(self, decision: Decision) -> None:
        """Run now, or wait for ``not_before`` (backoff) and for the step it follows."""
        if self.now is None:
            self._execute(decision)
            return
        # The backoff is relative to the decision; logs may run on another clock.
        delay = max(0.0, decision.not_before - decision.time)
        waits_for = decision.after if decision.after in self.open else None
        if delay > 0 or waits_for is not None or self.waiting:
            heapq.heappush(self.waiting, (self.now() + delay, self._order, decision))
            self._order += 1
            return
        self._execute(decision)

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
            if before is not None and self.failed.get(before):
                self._outcome(decision, "closed", f"skipped: {before} did not succeed")
                continue
            self._execute(decision)
            ran.append(decision)
        return ran

    def next_due(self) -> float | None:
        """When the earliest waiting decision may run (None: nothing waits)."""
        return self.waiting[0][0] if self.waiting else None

    def _execute(self, decision: Decision) -> None:
        if self.executor is None:
            return
        if decision.after is not None and self.failed.get(decision.after):
            self._outcome(decision, "closed", f"skipped: {decision.after} did not succeed")
            return
        self._outcome(decision, "started", "")
        self.started.add(decision.key)
        status = self.executor.run(decision)
        if status is None:
            self.running[decision.key] = decision
            return
        self._finish(decision, status, "")

    def complete(self, key: str, status: str, detail: str = "") -> bool:
        """The outcome of an action that ran on elsewhere; False if none was pending."""
        decision = self.running.pop(key, None)
        if decision is None:
            return False
        self._finish(decision, status, detail)
        return True

    def _finish(self, decision: Decision, status: str, detail: str) -> None:
        self.stats.executed += 1
        self.failed[decision.key] = status != "succeeded"
        if len(self.failed) > _FAILED_KEPT:  # only recent keys can be an 'after'
            del self.failed[next(iter(self.failed))]
        self._outcome(decision, status, detail)

    def _outcome(self, decision: Decision, status: str, detail: str) -> None:
        self._observe_outcome(decision, status)
        if status in FINAL:
            self.open.pop(decision.key, None)
            self.started.discard(decision.key)
            for follower in self.parked.pop(decision.key, []):  # due now, in order
                when = self.now() if self.now is not None else 0.0
                heapq.heappush(self.waiting, (when, self._order, follower))
                self._order += 1
        if self.journal is not None:
            self._append(
                [{"type": "outcome", "key": decision.key, "status": status, "detail": detail}]
            )

    def _append(self, records: list[dict[str, Any]]) -> None:
        if self.journal is not None and records:
            try:
                self.journal.append(records)
            except OSError as exc:
                self.observer.journal_failed(exc)
                raise
            self.observer.journal_written(len(records))
            self._since_snapshot += len(records)

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

    def _observe_outcome(self, decision: Decision, status: str) -> None:
        if status == "started":
            self._started_at[decision.key] = time.monotonic()
            self.observer.action_started(decision)
        elif status in FINAL:
            began = self._started_at.pop(decision.key, None)
            took = None if began is None else time.monotonic() - began
            self.observer.action_finished(decision, status, took)

    def _maybe_snapshot(self) -> None:
        if self._since_snapshot >= self.snapshot_every:
            self.snapshot()

    def snapshot(self) -> None:
        """Write the folded state as a snapshot, so start-up need not read it all."""
        if self.journal is None:
            return
        self.journal.snapshot(
            {
                "state": state_to_dict(self.state),
                "checkpoints": {s: c.to_dict() for s, c in self.checkpoints.items()},
                "tails": self.tails,
                "seen": self.seen,
                "open": [output_to_dict(d) for d in self.open.values()],
                "started": sorted(self.started),
            }
        )
        self._since_snapshot = 0
