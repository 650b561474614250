"""Replay as a library: logs or a journal in, a typed :class:`ReplayResult` out.

:func:`replay_logs` parses captured logs and decides with one rule set; if asked it
records the replay in a journal, collects a postmortem (with a what-if comparison
under a second rule set) and counts metrics. :func:`replay_journal` reads a journal
as it was written, or decides its events again under rules passed explicitly. Each
item goes to ``sink`` as it happens, so memory stays flat however long the input.
Nothing here prints: the command line does (:mod:`healer.cli`).
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

from healer.engine import Engine
from healer.engine.model import Decision, Output, Transition
from healer.engine.rules import Policy, RuleSet
from healer.errors import InputError
from healer.events import Event
from healer.journal import EventRecord, Journal, Record, TickRecord
from healer.observe import NULL_OBSERVER, Observer
from healer.pipeline.recorded import AsRecorded, JournalTally, journal_records
from healer.pipeline.replay import Input, ReplaySummary, decide, replay
from healer.pipeline.results import (
    JournalCounts,
    LogCounts,
    Redecided,
    ReplayResult,
    WhatIf,
)
from healer.runner import Runner
from healer.timeline import TimelineItem

if TYPE_CHECKING:
    from healer.metrics import HealerMetrics
    from healer.report import Collector, Postmortem

__all__ = ["Sink", "replay_journal", "replay_logs"]

Sink = Callable[[TimelineItem], object]
"""Where each item of the timeline goes as it happens (a printer, a test's list)."""

_JOURNAL_HINT = "name a directory healer can create and write"


def replay_logs(
    inputs: Sequence[Input],
    rules: RuleSet | None,
    *,
    year: int,
    keep_unrecognized: bool = False,
    merge: bool = True,
    max_line_bytes: int = 1 << 16,
    write_journal: str | Path | None = None,
    report: bool = False,
    what_if: RuleSet | None = None,
    metrics: bool = False,
    sink: Sink | None = None,
    progress: Callable[[int], object] | None = None,
) -> ReplayResult:
    """Replay logs; ``rules`` None gives events only (no journal, report or what-if).

    Every input is opened before anything is decided or written, so a missing or
    unreadable file raises :class:`InputError` before the sink sees an item.
    """
    _check(rules, write_journal=write_journal, report=report, what_if=what_if)
    summary = ReplaySummary()
    items = replay(
        inputs,
        default_year=year,
        keep_unrecognized=keep_unrecognized,
        merge=merge,
        max_line_bytes=max_line_bytes,
        summary=summary,
        progress=progress,
    )
    first = next(items, None)  # opens every input, reads the first block of each
    parsed = items if first is None else chain((first,), items)
    meters = _metrics(rules.policy if rules else Policy(), [i.name for i in inputs], metrics)
    runner = None if rules is None else _runner(rules, write_journal, meters or NULL_OBSERVER)
    reports = _Reports.maybe(report, recorded=False, other=what_if)
    stream: Iterable[TimelineItem] = parsed if runner is None else decide(parsed, runner)
    try:
        _drain(stream, sink, reports, feed_other=True)
        _close(runner, write_journal)
    finally:
        if runner is not None and runner.journal is not None:
            runner.journal.close()
    if reports is not None and reports.other is not None:
        reports.add_other(reports.other.finish())  # as decide() does for the main rules
    if meters is not None:
        for source, stats in summary.parse.items():
            meters.lines(source, stats.lines, stats.unparsed_lines)
        if runner is None:  # no runner told the metrics about the events
            for kind, count in summary.kinds.items():
                meters.events.labels(kind).inc(count)
    parse = summary.parse.values()
    counts = LogCounts(
        lines=sum(s.lines for s in parse),
        events=sum(s.events for s in parse),
        unparsed=sum(s.unparsed_lines for s in parse),
        truncated_lines=sum(r.truncated_lines for r in summary.read.values()),
        kinds=dict(sorted(summary.kinds.items())),
        decisions=None if runner is None else runner.stats.decisions,
    )
    postmortem, other = reports.finish() if reports is not None else (None, None)
    return ReplayResult(
        counts=counts,
        inputs=tuple(i.name for i in inputs),
        rules=rules.digest if rules else "",
        recorded=False,
        postmortem=postmortem,
        what_if=None if other is None or what_if is None else WhatIf(what_if.digest, other),
        metrics=meters,
    )


def replay_journal(
    path: str | Path,
    *,
    rules: RuleSet | None = None,
    events_only: bool = False,
    write_journal: str | Path | None = None,
    report: bool = False,
    what_if: RuleSet | None = None,
    metrics: bool = False,
    sink: Sink | None = None,
) -> ReplayResult:
    """A journal as it was written; with ``rules``, its events decided again under them.

    As recorded, the decisions, phase changes and outcomes are the journal's own and
    its rules are the digests its runs name. ``what_if`` decides the events under a
    second rule set for the report's comparison; ``events_only`` passes only events.
    Writing a journal needs ``rules``: a journal as recorded is one already.
    """
    if write_journal and rules is None:
        raise ValueError("writing a journal from a journal needs rules to decide again")
    if events_only and (rules or report or what_if):
        raise ValueError("events_only passes events only: no rules, report or what-if")
    if what_if is not None and not report:
        raise ValueError("a what-if comparison is part of a report: pass report=True")
    records = journal_records(path)
    tally = JournalTally()
    meters = _metrics(rules.policy if rules else Policy(), [], metrics)
    observer: Observer = meters or NULL_OBSERVER
    main = None if rules is None else _Redecider(_runner(rules, write_journal, observer))
    recorded = AsRecorded(observer)
    reports = _Reports.maybe(report, recorded=rules is None, other=what_if)
    other = None if reports is None or reports.other is None else _Redecider(reports.other)
    again = Redecided(rules.digest if rules else "", 0, 0, 0)

    def timeline() -> Iterator[TimelineItem]:
        nonlocal again
        for record in records:
            tally.count(record)
            if reports is not None and other is not None:
                reports.add_other(other.record(record))
            if main is None:
                item = recorded.item(record)
                if item is not None and (not events_only or isinstance(item, Event)):
                    yield item
                continue
            for item in main.record(record):
                again = _counted(again, item)
                yield item
        if reports is not None and other is not None:
            reports.add_other(other.finish())
        for output in main.finish() if main is not None else ():
            again = _counted(again, output)
            yield output

    try:
        _drain(timeline(), sink, reports, feed_other=False)
        _close(main.runner if main else None, write_journal)
    finally:
        if main is not None and main.runner.journal is not None:
            main.runner.journal.close()
    postmortem, other_pm = reports.finish() if reports is not None else (None, None)
    counts = JournalCounts(
        records=tally.records,
        events=tally.events,
        kinds=dict(sorted(tally.kinds.items())),
        decisions=tally.decisions,
        suppressed=tally.suppressed,
        transitions=tally.transitions,
        outcomes=dict(sorted(tally.outcomes.items())),
        rules=tuple(tally.rules),
        redecided=again if rules is not None else None,
    )
    return ReplayResult(
        counts=counts,
        inputs=(str(path),),
        rules=rules.digest if rules else "",
        recorded=rules is None and not events_only,
        recorded_rules=tuple(tally.rules),
        postmortem=postmortem,
        what_if=None if other_pm is None or what_if is None else WhatIf(what_if.digest, other_pm),
        metrics=meters,
    )


# --- the parts ----------------------------------------------------------------------


def _check(
    rules: RuleSet | None,
    *,
    write_journal: str | Path | None,
    report: bool,
    what_if: RuleSet | None,
) -> None:
    """Combinations a caller must not ask for (the command line reports them as usage)."""
    if what_if is not None and not report:
        raise ValueError("a what-if comparison is part of a report: pass report=True")
    if rules is None and (write_journal or report):
        raise ValueError("a journal or a report of a replay needs rules")


def _metrics(policy: Policy, sources: Sequence[str], wanted: bool) -> HealerMetrics | None:
    if not wanted:
        return None
    from healer.metrics import HealerMetrics  # noqa: PLC0415 - prometheus_client only if asked

    return HealerMetrics(policy, sources=sources)


def _runner(
    rules: RuleSet, journal_dir: str | Path | None = None, observer: Observer = NULL_OBSERVER
) -> Runner:
    """A runner that executes nothing; its journal, if any, goes to a new directory.

    A replay runs no action, so nothing must be durable before one: its journal is
    synced once, when it is closed.
    """
    journal = None if journal_dir is None else _new_journal(Path(journal_dir))
    runner = Runner(Engine(rules), journal, observer=observer)
    try:
        runner.start()
    except OSError as exc:
        problem = f"cannot be written: {exc.strerror}"
        raise InputError(str(journal_dir), problem, _JOURNAL_HINT) from exc
    if runner.degraded:  # the runner keeps what it could not write: say so now
        raise InputError(str(journal_dir), "cannot be written", _JOURNAL_HINT)
    return runner


def _new_journal(root: Path) -> Journal:
    if root.exists() and not root.is_dir():
        raise InputError(str(root), "is not a directory", "name a new directory for the journal")
    if any(root.glob("segment-*")):
        raise InputError(str(root), "already holds a journal", "write a replay to a new directory")
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(str(root), f"cannot be created: {exc.strerror}", _JOURNAL_HINT) from exc
    if not os.access(root, os.W_OK | os.X_OK):
        raise InputError(str(root), "is not writable", _JOURNAL_HINT)
    return Journal(root, fsync="never")


def _close(runner: Runner | None, journal_dir: str | Path | None) -> None:
    """Every record written, or an error naming the journal: never a silent gap."""
    if runner is not None and runner.journal is not None and not runner.flush(force=True):
        raise InputError(str(journal_dir), "could not be written completely", _JOURNAL_HINT)


def _drain(
    stream: Iterable[TimelineItem], sink: Sink | None, reports: _Reports | None, *, feed_other: bool
) -> None:
    """Run the stream to its end; the cheapest loop for what was asked."""
    if reports is None:
        if sink is None:
            deque(stream, maxlen=0)
        else:
            for item in stream:
                sink(item)
        return
    add = reports.add_fed if feed_other else reports.add
    for item in stream:
        add(item)
        if sink is not None:
            sink(item)


def _counted(again: Redecided, item: TimelineItem) -> Redecided:
    if isinstance(item, Decision):
        suppressed = again.suppressed + (item.suppressed is not None)
        return Redecided(again.rules, again.decisions + 1, suppressed, again.transitions)
    if isinstance(item, Transition):
        return Redecided(again.rules, again.decisions, again.suppressed, again.transitions + 1)
    return again


class _Redecider:
    """A journal's events, and the ticks that fired its timers, decided again."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def record(self, record: Record) -> list[Event | Output]:
        if isinstance(record, EventRecord):
            event = record.event
            return [event, *self.runner.ingest((event,), stream=record.stream)]
        if isinstance(record, TickRecord):
            return list(self.runner.tick(record.time))
        return []

    def finish(self) -> list[Output]:
        return self.runner.finish()  # the input ended: a connect still waiting counts now


class _Reports:
    """The postmortem collector, and for a what-if the second rule set's runner and own."""

    def __init__(self, *, recorded: bool, other: Runner | None) -> None:
        from healer.report import Collector  # noqa: PLC0415 - only when a report is asked for

        self.main: Collector = Collector(recorded=recorded)
        self.other = other
        self.other_collector: Collector | None = Collector() if other is not None else None

    @classmethod
    def maybe(cls, wanted: bool, *, recorded: bool, other: RuleSet | None) -> _Reports | None:
        """Collectors only when a report is asked for (healer.report is not imported else)."""
        if not wanted:
            return None
        return cls(recorded=recorded, other=_runner(other) if other is not None else None)

    def add(self, item: TimelineItem) -> None:
        self.main.add(item)

    def add_fed(self, item: TimelineItem) -> None:
        """Also decide each event under the second rule set (a replay of logs)."""
        self.main.add(item)
        if self.other is not None and isinstance(item, Event):
            self.add_other([item, *self.other.ingest((item,))])

    def add_other(self, items: Iterable[TimelineItem]) -> None:
        if self.other_collector is not None:
            for item in items:
                self.other_collector.add(item)

    def finish(self) -> tuple[Postmortem, Postmortem | None]:
        other = self.other_collector.finish() if self.other_collector is not None else None
        return self.main.finish(), other
