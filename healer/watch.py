"""``healer watch``: the live loop around the same engine, journal and runner.

One thread decides and writes the journal. Helper threads only feed it: each
supervised virtiofsd's stderr lines and its exit (seen the moment ``wait`` returns)
go into a bounded queue; an adopted virtiofsd's exit is seen through a pidfd; the
outcomes of slow actions (run on per-share workers, see
:mod:`healer.actions.live`) and their requests to start a daemon come back on a
control channel the loop drains first. Every input goes through the runner
(journal first, then act); decisions whose backoff has not passed wait in the
runner and run when due. SIGTERM/SIGINT stop the loop: children are stopped and the
held sockets removed. A healer killed with -9 takes its virtiofsd along
(parent-death signal) and resumes from the journal.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, cast

from healer.actions.live import LiveActions
from healer.actions.workers import ShareWorkers
from healer.config import Config, ShareConfig
from healer.engine import Engine, RuleSet, Status
from healer.events import Event, Origin, VirtiofsdExited, VirtiofsdListening
from healer.follow import FollowedLogs
from healer.journal import Journal
from healer.metrics import HealerMetrics, MetricsServer, TextfileWriter, failure_kinds
from healer.observe import FanOut, LineTally, LoggingObserver, Observer
from healer.parse import SourceParser
from healer.runner import Runner
from healer.sources.notify import watch_files, watch_inotify
from healer.supervise import (
    AdoptedVirtiofsd,
    ExitStatus,
    HeldSocket,
    SupervisedVirtiofsd,
    find_virtiofsd,
    virtiofsd_argv,
)

__all__ = ["Watchdog"]

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000
TICK_S = 1.0
RESTART_GRACE_S = 1.0  # a daemon that lost its client exits within this
ADOPT_LOOK_S = 0.1  # how often to look for an adopted share's next daemon


@dataclass(slots=True)
class _Share:
    """A share at run time: supervised (held socket + daemon) or adopted."""

    config: ShareConfig
    held: HeldSocket | None = None
    daemon: SupervisedVirtiofsd | None = None
    adopted: AdoptedVirtiofsd | None = None
    parser: SourceParser | None = None
    offset: int = 0
    exits: int = 0
    said: int = 0  # events healer itself reported about this share
    copy: BinaryIO | None = None  # share.log: a copy of the daemon's stderr
    sources: dict[int, str] = field(default_factory=dict)


def _metrics(config: Config, rules: RuleSet) -> HealerMetrics:
    """The watchdog's metrics: a share is labelled by its configured name."""
    aliases: dict[str, str] = {}
    for share in config.shares:
        aliases |= {share.socket: share.name, share.tag: share.name, share.name: share.name}
    if len(config.shares) == 1:  # events that name no share are about the only one
        aliases["default"] = config.shares[0].name
    sources = [s.name for s in config.sources]
    sources += [f"virtiofsd:{s.name}" for s in config.shares if s.mode == "supervise" or s.log]
    return HealerMetrics(
        rules.policy,
        shares=aliases,
        supervised=[s.name for s in config.shares],  # up only while a daemon runs
        sources=sources,
        journal=config.journal,
        failure_kinds=failure_kinds(rules),
    )


class Watchdog:
    """Supervises the configured shares and heals them by the rules."""

    def __init__(
        self, config: Config, rules: RuleSet, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.clock = clock
        self.inputs: queue.Queue[tuple[str, str, object]] = queue.Queue(QUEUE_LIMIT)
        # Outcomes and start requests from action workers: never dropped, and bounded
        # by the workers' own queues.
        self.control: queue.SimpleQueue[tuple[str, str, object]] = queue.SimpleQueue()
        self.dropped = 0
        self.journal = Journal(config.journal, fsync=config.fsync)
        self.workers = ShareWorkers(self._done, queue_limit=config.action_queue)
        self.actions = LiveActions(
            config,
            self,
            self.workers,
            adopt_wait_s=config.adopt_wait,
            report=lambda e: self._put_control("event", "", e),
        )
        self.metrics = _metrics(config, rules)
        self.observer: Observer = FanOut([LoggingObserver(log), self.metrics])
        self.tally = LineTally()
        self.exposition: list[MetricsServer | TextfileWriter] = []
        self.metrics.limits = self.limit_hits
        self.runner = Runner(
            Engine(rules),
            self.journal,
            self.actions,
            checker=self.actions,
            now=clock,
            observer=self.observer,
        )
        self.shares: dict[str, _Share] = {}
        self.logs = FollowedLogs(config, self.runner, self.observer, self.tally, clock=clock)
        self._next_look = 0.0
        # Respawns waiting for a daemon to exit: share -> (pid, decision key, deadline).
        self.restarts: dict[str, tuple[int, str, float]] = {}
        self.adopted: dict[str, AdoptedVirtiofsd] = {}  # the adopted shares' daemons
        self.logs_changed = threading.Event()

    # --- life cycle ---------------------------------------------------------------

    def serve(self, stop: threading.Event) -> int:
        """Start, loop until ``stop`` is set, shut down cleanly; returns an exit code."""
        self._expose()
        for share in self.config.shares:
            if share.mode == "supervise":
                self.shares[share.name] = self._supervise(share)
            else:
                adopted = AdoptedVirtiofsd(share.socket, share.pid_file)
                self.shares[share.name] = _Share(share, adopted=adopted)
                self.adopted[share.name] = adopted
        for name, running in self.shares.items():
            if running.daemon is not None:
                self._start(name)
        self.runner.start()  # fold the journal, reconcile what a crash left open
        for name, running in self.shares.items():
            if running.adopted is not None:
                self._adopt(name)
        self.logs.start()
        if self.logs.tailed:
            self.logs_changed.set()  # read what is there now, before any notification
            paths = self.logs.paths
            threading.Thread(target=self._notify, args=(paths, stop), daemon=True).start()
        try:
            self._loop(stop)
        finally:
            self.shutdown()
        return 0

    def _notify(self, paths: list[str], stop: threading.Event) -> None:
        # The loop itself polls the logs every TICK_S: the watcher only has to say
        # "now" between ticks, so its own safety-net poll can be rare. The flag, not
        # the queue, carries the news: a busy queue of stderr lines must not delay it.
        step = self.config.notify_step_ms
        if self.config.notify == "inotify":
            try:
                self._follow(watch_inotify(paths, stop=stop, poll_interval_s=60.0))
                return
            except OSError as exc:  # no inotify (or out of instances): the portable way
                log.warning("inotify is not available (%s): watching with watchfiles", exc)
        self._follow(watch_files(paths, stop=stop, poll_interval_s=60.0, step_ms=step))

    def _follow(self, changes: Iterator[set[Path]]) -> None:
        for _changed in changes:
            self.logs_changed.set()
            if self.inputs.empty():
                self._put("wake", "", None)

    def shutdown(self) -> None:
        self.workers.close()
        while not self.control.empty():  # outcomes that came in: journal them
            self._on_control(*self.control.get_nowait())
        self.logs.close()
        for name, share in self.shares.items():
            if share.daemon is not None:
                pid = share.daemon.pid
                share.daemon.stop()
                if pid is not None:
                    self.observer.virtiofsd_exited(name, pid)
            if share.held is not None:
                share.held.close()
            if share.copy is not None:
                share.copy.close()
        self.journal.close()
        for exposed in self.exposition:  # last: the final numbers show the daemons stopped
            exposed.stop()
        self.exposition.clear()

    def _supervise(self, share: ShareConfig) -> _Share:
        held = HeldSocket(share.socket)
        argv = list(share.virtiofsd)
        if not argv:
            found = find_virtiofsd()
            if found is None:
                held.close()
                msg = "no virtiofsd is installed; set share.virtiofsd or install it"
                raise FileNotFoundError(msg)
            argv = virtiofsd_argv(*found, shared_dir=share.shared_dir)
        argv = [
            a.replace("{shared_dir}", share.shared_dir).replace("{tag}", share.tag) for a in argv
        ]
        daemon = SupervisedVirtiofsd(
            argv, held, on_line=lambda line: self._put("line", share.name, (line, self.clock()))
        )
        copy = None
        if share.log:
            copy = Path(share.log).open("ab", buffering=0)  # noqa: SIM115 - closed at shutdown
        return _Share(share, held, daemon, copy=copy)

    def _start(self, name: str) -> None:
        share = self.shares[name]
        assert share.daemon is not None  # noqa: S101 - only supervised shares start
        pid = share.daemon.start()
        self.observer.virtiofsd_started(name, pid)
        share.parser = SourceParser(f"virtiofsd:{name}:{pid}", default_year=self._now().year)
        share.offset = 0
        daemon = share.daemon
        threading.Thread(target=self._await_exit, args=(name, daemon, pid), daemon=True).start()

    def _adopt(self, name: str) -> None:
        """Find an adopted daemon and watch its exit; not found counts as exited."""
        share = self.shares[name]
        assert share.adopted is not None  # noqa: S101 - only adopted shares
        pid = share.adopted.locate()
        if pid is None:
            if share.exits == 0:  # at start: say so once, and let the rules decide
                self._on_exit(name, 0, None)
            return
        self.observer.virtiofsd_started(name, pid)
        share.adopted.watch_exit(pid, lambda gone: self._put_control("exit", name, (gone, None)))
        self._healer_says(
            VirtiofsdListening,
            share,
            pid,
            f"adopted virtiofsd {pid} for share {name}, listening on {share.config.socket}",
            level="INFO",
        )

    def _await_exit(self, name: str, daemon: SupervisedVirtiofsd, pid: int) -> None:
        proc = daemon.proc
        if proc is None or proc.pid != pid:
            return
        returncode = proc.wait()
        daemon.drain(timeout_s=0.5)  # its last stderr lines are queued before its exit
        self._put("exit", name, (pid, ExitStatus.from_returncode(returncode)))

    def _put(self, kind: str, name: str, payload: object) -> None:
        try:
            self.inputs.put_nowait((kind, name, payload))
        except queue.Full:
            self.dropped += 1  # counted; a line lost is better than a blocked daemon

    def _put_control(self, kind: str, name: str, payload: object) -> None:
        self.control.put((kind, name, payload))
        if self.inputs.empty():  # wake the loop; when inputs wait it wakes anyway
            self._put("wake", "", None)

    def _done(self, key: str, status: Status, detail: str) -> None:
        self._put_control("done", key, (status, detail))

    def limit_hits(self) -> dict[str, int]:
        """Each bound and how often it was reached (for ``healer_limit_hits_total``)."""
        return {
            "input_queue": self.dropped,
            "action_queue": self.workers.rejected,
            "line_length": self.logs.lines_cut,
        }

    # --- Daemons, for the live actions ------------------------------------------------

    def running(self, name: str) -> bool:
        share = self.shares[name]
        if share.adopted is not None:
            return share.adopted.running()
        daemon = share.daemon
        return daemon is not None and daemon.proc is not None and daemon.poll() is None

    def start(self, name: str) -> None:
        self._start(name)

    def request_start(self, name: str) -> None:
        self._put_control("start", name, None)

    def pid(self, name: str) -> int | None:
        share = self.shares[name]
        if share.adopted is not None:
            return share.adopted.pid if share.adopted.running() else None
        return share.daemon.pid if self.running(name) and share.daemon is not None else None

    def restart_after_exit(self, name: str, pid: int, key: str) -> bool:
        share = self.shares[name]
        if share.daemon is None or self.pid(name) != pid:
            return False
        self.restarts[name] = (pid, key, self.clock() + RESTART_GRACE_S)
        return True

    def _restarts_due(self) -> None:
        """A daemon that was to exit but still runs after the grace: it kept its client."""
        for name, (pid, key, deadline) in list(self.restarts.items()):
            if self.clock() >= deadline:
                del self.restarts[name]
                self.runner.complete(key, Status.SUCCEEDED, f"virtiofsd {pid} still serves")

    # --- the loop -----------------------------------------------------------------

    def _loop(self, stop: threading.Event) -> None:
        next_tick = self.clock() + TICK_S
        while not stop.is_set():
            due = self.runner.next_due()
            wake = min(next_tick, due if due is not None else next_tick)
            if self._missing_adopted():  # look for its successor often, not only per tick
                wake = min(wake, self._next_look)
            wait = wake - self.clock()
            try:
                kind, name, payload = self.inputs.get(timeout=max(0.0, min(wait, TICK_S)))
            except queue.Empty:
                kind = ""
            while not self.control.empty():
                self._on_control(*self.control.get_nowait())
            if kind == "line":
                self._on_line(name, *payload)  # type: ignore[misc]
            elif kind == "exit":
                self._on_exit(name, *payload)  # type: ignore[misc]
            polled = kind == "" or self.clock() >= next_tick  # the safety net, once a tick
            if self.logs.tailed and (polled or self.logs_changed.is_set()):
                self.logs_changed.clear()
                self.logs.read()
            self._restarts_due()
            self.runner.run_due()
            if self.clock() >= self._next_look:
                self._look_for_adopted()
                self._next_look = self.clock() + ADOPT_LOOK_S
            if self.clock() >= next_tick:
                self.runner.tick(self.clock())
                next_tick = self.clock() + TICK_S

    def _on_control(self, kind: str, name: str, payload: object) -> None:
        if kind == "done":
            status, detail = cast(tuple[Status, str], payload)
            self.runner.complete(name, status, detail)
        elif kind == "start" and not self.running(name):
            self._start(name)
        elif kind == "exit":
            self._on_exit(name, *payload)  # type: ignore[misc]
        elif kind == "event":  # an action's own report (QEMU: device deleted, stuck)
            self.runner.ingest([cast(Event, payload)])

    def _missing_adopted(self) -> list[str]:
        return [name for name, found in self.adopted.items() if not found.running()]

    def _look_for_adopted(self) -> None:
        """An adopted share without a live daemon may have a new one by now."""
        for name in self._missing_adopted():
            self._adopt(name)

    def _on_line(self, name: str, line: bytes, read_at: float) -> None:
        """One stderr line, with when the reader thread got it (the detection latency)."""
        share = self.shares[name]
        if share.parser is None:
            return
        data = line + b"\n"
        if share.copy is not None:
            try:
                share.copy.write(data)
            except OSError as exc:  # a full disk must not stop the healing
                log.error("cannot copy virtiofsd output to %s: %s", share.config.log, exc)
        items = share.parser.feed(data, share.offset, ingest=self._now())
        share.offset += len(data)
        if self.inputs.empty():  # no more lines waiting: the last record is complete
            items += share.parser.close()
        pid, tag = share.daemon.pid if share.daemon else None, share.config.tag
        events = [self._about(i, pid, tag) for i in items if isinstance(i, Event)]
        self.tally.report(self.observer, f"virtiofsd:{name}", share.parser)
        if events:
            self.runner.ingest(events, read_at=read_at)

    def _about(self, event: Event, pid: int | None, tag: str) -> Event:
        """Lines read from a daemon's stderr are about that process and its share.

        They are read the moment they are written, so a line without a time of its
        own (the C virtiofsd prints none) takes the time it was read.
        """
        origin = replace(event.origin, program="virtiofsd", pid=pid)
        when = event.time if event.time is not None else self._now()
        return replace(event, share=event.share or tag, origin=origin, time=when)

    def _on_exit(self, name: str, pid: int, status: ExitStatus | None) -> None:
        """VirtiofsdExited; ``status`` None: an adopted daemon (not our child) or none."""
        share = self.shares[name]
        self.observer.virtiofsd_exited(name, pid)
        if share.parser is not None:  # lines still buffered in the parser
            tag = share.config.tag
            events = [
                self._about(i, pid, tag) for i in share.parser.close() if isinstance(i, Event)
            ]
            if events:
                self.runner.ingest(events)
        share.exits += 1
        if status is None:
            detail = "adopted: exit status unknown" if pid else "adopted: not running"
            status = ExitStatus(None, None)
        elif status.signal is None:
            detail = f"exit status {status.code}"
        else:
            detail = f"killed by {status.signal}"
        lines = share.daemon.last_lines if share.daemon is not None else ()
        last = b"\n".join(lines).decode("utf-8", "replace")
        waiting = self.restarts.get(name)
        if waiting is not None and waiting[0] == pid:  # a respawn waits for this exit
            key = waiting[1]
            del self.restarts[name]
            self._start(name)
            self.runner.complete(key, Status.SUCCEEDED, f"started when {pid} exited")
        self._healer_says(
            VirtiofsdExited,
            share,
            pid,
            f"virtiofsd {pid or '-'} for share {name} exited ({detail})",
            raw=last[-4096:],
            name="virtiofsd",
            status=status.code,
            signal=status.signal,
            reporter="healer",
        )

    def _healer_says(
        self,
        kind: type[Event],
        share: _Share,
        pid: int | None,
        message: str,
        *,
        level: str = "WARN",
        raw: str = "",
        **fields: object,
    ) -> None:
        """An event healer saw itself (an exit, an adoption), journaled like a log line."""
        share.said += 1
        event = kind(
            time=self._now(),
            source=f"healer:{share.config.name}",
            offset=time.time_ns(),  # increasing across healer restarts too
            line=share.said,
            share=share.config.tag,
            level=level,
            message=message,
            raw=raw,
            origin=Origin(program="virtiofsd", pid=pid or None),
            **fields,
        )
        log.log(logging.getLevelName(level.replace("WARN", "WARNING")), "%s", message)
        self.runner.ingest([event])

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # --- metrics (healer/metrics): exposition starts with serve, stops at shutdown --

    def _expose(self) -> None:
        """``/metrics`` on the configured address; the textfile, when configured.

        A metrics endpoint that cannot start (the port is taken) is logged, and the
        watchdog runs on: healing matters more, and the scrape failing is the alert.
        """
        if self.config.metrics:
            try:
                server = MetricsServer.start(self.metrics.registry, self.config.metrics)
            except OSError as exc:
                log.error("metrics on %s cannot listen: %s", self.config.metrics, exc)
            else:
                self.exposition.append(server)
                log.info("metrics on http://%s/metrics", self.config.metrics)
        if self.config.metrics_textfile:
            writer = TextfileWriter(self.metrics.registry, self.config.metrics_textfile)
            writer.start()
            self.exposition.append(writer)
