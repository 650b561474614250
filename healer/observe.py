"""One observer interface for everything that happens inside healer.

The pure core (:meth:`Engine.step`) emits nothing: the runner is the one place that
sees ingested events, decisions, actions starting and finishing, and the engine
state after each step, and it tells an :class:`Observer`. The watchdog adds what
only it sees (virtiofsd started or gone, log lines read). Metrics
(:mod:`healer.metrics`), logging (:class:`LoggingObserver`) and tests all implement
this one Protocol; :class:`FanOut` feeds several at once.

Observers are called on the deciding thread, in the event path: they must be cheap
(count, store a reference) and never raise.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Protocol

from healer.engine.model import Decision, EngineState, Transition
from healer.events import Event
from healer.parse import SourceParser

__all__ = [
    "NULL_OBSERVER",
    "FanOut",
    "LineTally",
    "LoggingObserver",
    "NullObserver",
    "Observer",
]


class Observer(Protocol):
    """What healer tells about itself. Every method returns quickly and never raises."""

    def lines(self, source: str, lines: int, unparsed: int) -> None:
        """``lines`` more lines were read from ``source``, ``unparsed`` of them unrecognised."""

    def event(self, event: Event) -> None:
        """An event entered the engine (events already journaled are not seen again)."""

    def failure(self, share: str, kind: str) -> None:
        """An event of ``kind`` made a warning or critical rule decide for ``share``."""

    def detected(self, seconds: float) -> None:
        """Live: an event led to a decision ``seconds`` after its line was read."""

    def decision(self, decision: Decision) -> None:
        """The engine decided (or suppressed) an action."""

    def transition(self, transition: Transition) -> None:
        """A share changed phase (event time)."""

    def action_started(self, decision: Decision) -> None:
        """A decided action starts (its ``started`` record is durable)."""

    def action_finished(
        self, decision: Decision, status: str, seconds: float | None, detail: str = ""
    ) -> None:
        """An action ended: succeeded, failed, timed_out, closed or would_run (replay).

        ``seconds`` is how long it ran, when it was started in this process; ``detail``
        says why, in words (the journal's outcome detail).
        """

    def state(self, state: EngineState, at: float) -> None:
        """The engine state after a step; ``at`` is the clock it is valid for."""

    def virtiofsd_started(self, share: str, pid: int) -> None:
        """Live: healer started virtiofsd for ``share``."""

    def virtiofsd_exited(self, share: str, pid: int) -> None:
        """Live: the virtiofsd of ``share`` ended."""

    def journal_written(self, records: int) -> None:
        """``records`` journal records were written (and synced per the fsync policy)."""

    def journal_failed(self, error: OSError) -> None:
        """A journal write failed (the error is raised to the caller after this)."""


class NullObserver:
    """Observes nothing: the default, and the 'metrics off' of the benchmark."""

    def lines(self, source: str, lines: int, unparsed: int) -> None:
        pass

    def event(self, event: Event) -> None:
        pass

    def failure(self, share: str, kind: str) -> None:
        pass

    def detected(self, seconds: float) -> None:
        pass

    def decision(self, decision: Decision) -> None:
        pass

    def transition(self, transition: Transition) -> None:
        pass

    def action_started(self, decision: Decision) -> None:
        pass

    def action_finished(
        self, decision: Decision, status: str, seconds: float | None, detail: str = ""
    ) -> None:
        pass

    def state(self, state: EngineState, at: float) -> None:
        pass

    def virtiofsd_started(self, share: str, pid: int) -> None:
        pass

    def virtiofsd_exited(self, share: str, pid: int) -> None:
        pass

    def journal_written(self, records: int) -> None:
        pass

    def journal_failed(self, error: OSError) -> None:
        pass


NULL_OBSERVER = NullObserver()


class FanOut:
    """Tells every observer in turn, in the order given."""

    def __init__(self, observers: Iterable[Observer]) -> None:
        self.observers = tuple(observers)

    def __repr__(self) -> str:
        return f"FanOut({list(self.observers)!r})"

    def lines(self, source: str, lines: int, unparsed: int) -> None:
        for o in self.observers:
            o.lines(source, lines, unparsed)

    def event(self, event: Event) -> None:
        for o in self.observers:
            o.event(event)

    def failure(self, share: str, kind: str) -> None:
        for o in self.observers:
            o.failure(share, kind)

    def detected(self, seconds: float) -> None:
        for o in self.observers:
            o.detected(seconds)

    def decision(self, decision: Decision) -> None:
        for o in self.observers:
            o.decision(decision)

    def transition(self, transition: Transition) -> None:
        for o in self.observers:
            o.transition(transition)

    def action_started(self, decision: Decision) -> None:
        for o in self.observers:
            o.action_started(decision)

    def action_finished(
        self, decision: Decision, status: str, seconds: float | None, detail: str = ""
    ) -> None:
        for o in self.observers:
            o.action_finished(decision, status, seconds, detail)

    def state(self, state: EngineState, at: float) -> None:
        for o in self.observers:
            o.state(state, at)

    def virtiofsd_started(self, share: str, pid: int) -> None:
        for o in self.observers:
            o.virtiofsd_started(share, pid)

    def virtiofsd_exited(self, share: str, pid: int) -> None:
        for o in self.observers:
            o.virtiofsd_exited(share, pid)

    def journal_written(self, records: int) -> None:
        for o in self.observers:
            o.journal_written(records)

    def journal_failed(self, error: OSError) -> None:
        for o in self.observers:
            o.journal_failed(error)


class LoggingObserver(NullObserver):
    """Logs what an operator reading the service's log wants to see: one line per
    thing that matters (a decision with its rule and cause, an outcome with its
    reason, a phase change; a daemon's death and its stderr's tail are told by the
    loop, healer/live/loop.py), never one per log line read."""

    TOLD_LIMIT = 1024  # distinct suppressions told at info level, then debug only

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("healer")
        self._told: set[tuple[str, str, str, str]] = set()

    def decision(self, decision: Decision) -> None:
        cause = decision.cause
        why = f"on {cause.kind} at {cause.source}:{cause.line}" if cause else "on a timer"
        wait = decision.not_before - decision.time
        later = f" in {wait:.3f} s" if wait > 0 else ""
        if decision.suppressed is not None:
            # A flood (a rate limit, an open circuit) suppresses many: the first of each
            # kind is told, the rest at debug level (the journal and metrics count all).
            told = (decision.share, decision.rule, decision.action, decision.suppressed)
            first = told not in self._told and len(self._told) < self.TOLD_LIMIT
            if first:
                self._told.add(told)
            self.log.log(
                logging.INFO if first else logging.DEBUG,
                "share %s: %s not run (rule %s, %s): %s",
                decision.share,
                decision.action,
                decision.rule,
                why,
                decision.suppressed,
            )
            return
        self.log.info(
            "share %s: decided %s%s (rule %s, %s; %s)",
            decision.share,
            decision.action,
            later,
            decision.rule,
            why,
            decision.key,
        )

    def transition(self, transition: Transition) -> None:
        self.log.info(
            "share %s: %s -> %s (%s, %s)",
            transition.share,
            transition.before,
            transition.after,
            transition.reason,
            transition.incident,
        )

    def action_finished(
        self, decision: Decision, status: str, seconds: float | None, detail: str = ""
    ) -> None:
        took = f" in {seconds:.3f} s" if seconds is not None else ""
        reason = f": {detail}" if detail else ""
        level = logging.WARNING if status in ("failed", "timed_out") else logging.INFO
        self.log.log(
            level,
            "share %s: %s %s%s%s (%s)",
            decision.share,
            decision.action,
            status,
            took,
            reason,
            decision.key,
        )

    def virtiofsd_started(self, share: str, pid: int) -> None:
        self.log.info("share %s: virtiofsd %d started", share, pid)

    def journal_failed(self, error: OSError) -> None:
        self.log.error("the journal cannot be written: %s", error)


class LineTally:
    """Turns a parser's running counts into ``Observer.lines`` increments.

    A parser's lines are counted when fed; they are unparsed once the record they
    belong to is closed without an event, so the lines of a record still open are
    not reported as unparsed yet. A new parser for the same source (a new virtiofsd,
    a rotated file) starts its own count. ``future_times`` sums, over every parser
    reported, the lines whose own stamp was too far ahead of their read time.
    """

    __slots__ = ("_seen", "future_times")

    def __init__(self) -> None:
        # key -> the parser last seen, its lines, unparsed lines and future times so far
        self._seen: dict[str, tuple[SourceParser, int, int, int]] = {}
        self.future_times = 0

    def report(
        self, observer: Observer, source: str, parser: SourceParser, *, key: str | None = None
    ) -> None:
        """Tell ``observer`` what ``parser`` read since the last report under ``key``
        (default: ``source``; several parsers of one source each need their own)."""
        stats = parser.stats
        unparsed = max(0, stats.unparsed_lines - parser.open_lines)
        key = key or source
        last, lines_before, unparsed_before, future_before = self._seen.get(key, (parser, 0, 0, 0))
        if last is not parser:
            lines_before = unparsed_before = future_before = 0
        self.future_times += max(0, stats.future_times - future_before)
        more_lines = stats.lines - lines_before
        more_unparsed = max(0, unparsed - unparsed_before)
        if more_lines > 0 or more_unparsed > 0:
            observer.lines(source, max(0, more_lines), more_unparsed)
        self._seen[key] = (
            parser,
            stats.lines,
            max(unparsed, unparsed_before),
            max(stats.future_times, future_before),
        )

    def forget(self, key: str) -> None:
        """A parser that is done (a dead daemon's stderr): stop remembering it."""
        self._seen.pop(key, None)
