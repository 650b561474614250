"""The decision loop: the one thread that steps the engine and writes the journal.

Each turn it takes what arrived on its inbox (a daemon's exit first of all: an exit
never waits behind anything but earlier messages), reads the logs and stderr files
that changed, runs the decisions whose time has come, lets the engine's timers fire
and, when the journal could not be written, tries it again. It sleeps until the
earliest of: a message, a changed file, the next due decision, the next engine
timer, the next watchdog ping, or the safety tick.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from healer.engine import Status
from healer.events import Event
from healer.live.daemons import DaemonTable
from healer.live.logs import TailedLogs
from healer.live.messages import (
    ActionDone,
    ActionReport,
    DaemonGone,
    HolderLost,
    Message,
    OnLoop,
    StartWanted,
    Wake,
)
from healer.live.stderr import StderrFeed
from healer.observe import Observer
from healer.runner import Runner

__all__ = ["Loop"]

log = logging.getLogger(__name__)

TICK_S = 1.0  # the safety net: logs are polled and timers looked at at least this often
ADOPT_LOOK_S = 0.1  # how often an adopted share without a daemon is looked for
TAIL_LINES = 5  # of a dead daemon's stderr, logged with its exit
TAIL_WIDTH = 300  # characters of each of those lines


class Loop:
    """Runs until ``stop`` is set; see the module docstring."""

    def __init__(
        self,
        runner: Runner,
        daemons: DaemonTable,
        feed: StderrFeed | None,
        logs: TailedLogs,
        *,
        observer: Observer,
        clock: Callable[[], float] = time.time,
        ack: Callable[[str, int], None] | None = None,
        lost: Callable[[], None] | None = None,
        every_turn: Callable[[], float | None] | None = None,
    ) -> None:
        self.runner = runner
        self.daemons = daemons
        self.feed = feed
        self.logs = logs
        self.observer = observer
        self.clock = clock
        self.ack = ack  # tells the holder an exit is journaled
        self.lost = lost  # the holder went away: reconnect
        self.every_turn = every_turn  # the watchdog's own chores; returns its next wake
        self.inbox: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self.files_changed = threading.Event()
        self._next_look = 0.0

    def post(self, message: Message) -> None:
        """Any thread: hand the loop a message (it wakes at once)."""
        self.inbox.put(message)

    def changed(self) -> None:
        """The file watcher's thread: a watched file changed."""
        self.files_changed.set()
        self.inbox.put(Wake())

    # --- the loop -----------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        next_tick = self.clock() + TICK_S
        while not stop.is_set():
            wait = self._wait(next_tick)
            self._report_started()  # a start a chore made (a reload) is not held back
            try:
                first: Message | None = self.inbox.get(timeout=wait)
            except queue.Empty:
                first = None
            if first is not None:
                self._handle(first)
            self.drain()  # everything that came meanwhile, in order
            ticked = self.clock() >= next_tick
            behind = False
            if ticked or self.files_changed.is_set():
                self.files_changed.clear()
                if self.feed is not None:
                    behind = self.feed.read()
                behind = self.logs.read() or behind
            self.turn()
            if behind:  # a file holds more than a turn reads: again at once, messages first
                self.changed()
            if ticked:
                next_tick = self.clock() + TICK_S

    def drain(self) -> None:
        """Handle every message on the inbox now, in order."""
        while True:
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                self._report_started()
                return
            self._handle(message)

    def turn(self) -> None:
        """Decisions and timers that are due now (also run once after start-up)."""
        for name, key in self.daemons.overdue():  # it kept its client after all
            self.runner.complete(key, Status.SUCCEEDED, f"the virtiofsd of {name} still serves")
        self.runner.run_due()
        timer = self.runner.next_timer()
        if timer is not None and self.clock() >= timer:
            self.runner.tick(self.clock())
        self._report_started()
        self.runner.flush()
        if self.daemons.adopted and self.clock() >= self._next_look:
            self._next_look = self.clock() + ADOPT_LOOK_S
            for event in self.daemons.look_for_adopted():
                self.report(event)

    def _wait(self, next_tick: float) -> float:
        wakes = [next_tick]
        for when in (self.runner.next_due(), self.runner.next_timer()):
            if when is not None:
                wakes.append(when)
        if self.daemons.restarts:
            wakes += [due for _, _, due in self.daemons.restarts.values()]
        if self.daemons.adopted and any(not a.running() for a in self.daemons.adopted.values()):
            wakes.append(self._next_look)
        if self.every_turn is not None:
            chore = self.every_turn()
            if chore is not None:
                wakes.append(chore)
        return max(0.0, min(min(wakes) - self.clock(), TICK_S))

    # --- messages -----------------------------------------------------------------------

    def _handle(self, message: Message) -> None:
        self._report_started()  # before an exit of a daemon just started, always
        match message:
            case DaemonGone():
                self._gone(message)
            case ActionDone(key=key, status=status, detail=detail):
                self.runner.complete(key, status, detail)
            case StartWanted(share=share):
                failed = self.daemons.start(share)
                if failed is not None:
                    log.error("share %s: %s", share, failed)
            case ActionReport(event=event):
                self.report(event)
            case HolderLost():
                if self.lost is not None:
                    self.lost()
            case OnLoop(work=work, reply=reply):
                try:
                    reply.put(work())
                except Exception as exc:  # a request's fault must not end the loop
                    log.exception("a control request failed")
                    reply.put({"ok": False, "error": f"healer could not answer: {exc}"})
            case Wake():
                pass

    def _gone(self, message: DaemonGone) -> None:
        self.observer.virtiofsd_exited(message.share, message.pid)
        exited, waiting = self.daemons.gone(message)
        if waiting is not None:  # a respawn waited for this exit: the next one, now
            failed = self.daemons.start(message.share)
            if failed is None:
                detail = f"started when {message.pid} exited"
                self.runner.complete(waiting, Status.SUCCEEDED, detail)
            else:
                self.runner.complete(waiting, Status.FAILED, failed)
        level = logging.INFO if message.signal is None and message.code == 0 else logging.WARNING
        log.log(level, "share %s: %s", message.share, exited.message)
        for line in exited.raw.splitlines()[-TAIL_LINES:]:  # what it said last
            log.log(level, "share %s: virtiofsd said: %s", message.share, line[:TAIL_WIDTH])
        self.runner.ingest([exited], stream=exited.source)
        if self.ack is not None:
            self.ack(message.share, message.generation)

    def _report_started(self) -> None:
        """Journal the daemons started since last time, on this thread: a start made
        while the runner decides is not ingested inside it, and comes before any later
        message (an exit reported the moment after the start included)."""
        for event in self.daemons.take_started():
            self.report(event)

    def report(self, event: Event) -> None:
        """A fact healer established itself (a daemon started, a QEMU step): journaled on
        its own stream; positions the daemon table gave are kept, others are counted."""
        stream = event.source
        if event.kind == "VirtiofsdStarted" and event.origin.pid is not None and event.share:
            self.observer.virtiofsd_started(event.share, event.origin.pid)
        if event.offset <= 0:
            event = replace(event, offset=self.runner.next_offset(stream))
        self.runner.ingest([event], stream=stream)
