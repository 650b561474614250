"""``healer watch``: the parts of the live watchdog put together, and its life cycle.

This process is the *brain*: parsers, engine, journal and actions. It may crash or be
restarted at any time without the guest noticing, because the data path is not here:
the holder (:mod:`healer.holder`) owns the listening sockets and is the parent of
every virtiofsd, and outlives this process. Start-up, in order:

1. the journal's lock (a second healer on the same journal stops here, touching
   nothing else);
2. the holder: connected to, or started if none runs; what it runs is taken over;
3. the journal folded back into state and open decisions reconciled;
4. the shares' sockets held, exits that happened while healer was away decided on,
   daemons started for shares that have none;
5. logs followed, ``READY=1`` to systemd, and the decision loop.

SIGTERM/SIGINT stop this process only: daemons and sockets stay with the holder for
the next healer (``healer stop`` ends everything). SIGHUP reloads the configuration
and rules, validated first. See docs/lifecycle.md.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from healer import __version__
from healer.actions.live import LiveActions
from healer.actions.workers import ShareWorkers
from healer.config import Config, SourceConfig, VmmConfig, runtime_dir
from healer.engine import Engine, Phase, RuleSet, Status
from healer.events import Event
from healer.holder.client import HolderClient, HolderError
from healer.journal import Journal, JournalLock, StartRecord
from healer.live.control import CONTROL_SOCKET, ControlServer, Peer, wait_answer
from healer.live.daemons import DaemonTable
from healer.live.logs import TailedLog, TailedLogs
from healer.live.loop import Loop
from healer.live.messages import ActionDone, ActionReport, HolderLost, Message, OnLoop
from healer.live.reload import Reloader
from healer.live.status import Incidents, StatusSource, answer
from healer.live.stderr import StderrFeed
from healer.metrics import HealerMetrics, MetricsServer, TextfileWriter, failure_kinds
from healer.observe import FanOut, LineTally, LoggingObserver, Observer
from healer.runner import Runner
from healer.shares import ShareKeys, ShareNames
from healer.sources.notify import watch_files, watch_inotify
from healer.systemd import Notifier, watchdog_interval
from healer.vmm import ChApiClient, ChError, ChRemote

__all__ = ["Watchdog", "holder_dir"]

log = logging.getLogger(__name__)

RECONNECT_S = 0.5  # how often a lost holder is looked for again
DEVICE_LIST_TIMEOUT_S = 2.0  # vm.info at start: the most it may hold up the start


def holder_dir(config: Config) -> Path:
    """Where the holder keeps its socket, state and the daemons' stderr files."""
    return runtime_dir(config)


def share_keys(config: Config, vm: str | None = None) -> ShareKeys:
    """The names of the configuration's shares (of one VM's only, given ``vm``)."""
    shares = [s for s in config.shares if vm is None or s.vm == vm]
    return ShareKeys([ShareNames(s.name, s.tag, s.socket) for s in shares])


def vm_keys(config: Config) -> dict[str, ShareKeys]:
    """Per VM, the names of its shares: what its logs and its VMM's devices resolve to."""
    return {vm: share_keys(config, vm) for vm in sorted({s.vm for s in config.shares})}


def tailed_logs(config: Config) -> list[TailedLog]:
    """The configured logs, and each adopted daemon's own log (about its share)."""
    logs = [TailedLog(source) for source in config.sources]
    logs += [
        TailedLog(SourceConfig(share.log, f"virtiofsd:{share.name}"), share.name)
        for share in config.shares
        if share.mode == "adopt" and share.log
    ]
    return logs


def config_digest(config: Config) -> str:
    """A short digest of the configuration file as it is now (journaled at start)."""
    try:
        return hashlib.sha256(Path(config.file).read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


def _metrics(config: Config, rules: RuleSet) -> HealerMetrics:
    """The watchdog's metrics: every share is labelled by its configured name."""
    sources = [s.name for s in config.sources]
    sources += [f"virtiofsd:{s.name}" for s in config.shares if s.mode == "supervise" or s.log]
    return HealerMetrics(
        rules.policy,
        shares={s.name: s.name for s in config.shares},
        supervised=[s.name for s in config.shares],
        sources=sources,
        journal=config.journal,
        failure_kinds=failure_kinds(rules),
        vms={s.name: s.vm for s in config.shares},
    )


class Watchdog:
    """Supervises the configured shares and heals them by the rules."""

    def __init__(
        self,
        config: Config,
        rules: RuleSet,
        *,
        clock: Callable[[], float] = time.time,
        notifier: Notifier | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.notifier = notifier or Notifier.from_environ()
        self.metrics = _metrics(config, rules)
        self.incidents = Incidents()  # for `healer status`
        self.observer: Observer = FanOut([LoggingObserver(log), self.metrics, self.incidents])
        self.started_at = clock()
        self.control: ControlServer | None = None
        self.tally = LineTally()
        self.keys = share_keys(config)
        self.journal = Journal(config.journal, fsync=config.fsync)
        self.workers = ShareWorkers(self._worker_done, queue_limit=config.action_queue)
        self.holder: HolderClient | None = None
        self.exposition: list[MetricsServer | TextfileWriter] = []
        self.lock: JournalLock | None = None
        self.ready = threading.Event()  # set once the sockets are held and daemons started
        self.ignored_signals: deque[int] = deque(maxlen=64)  # caught, to be logged
        self._lost_at: float | None = None
        self._next_ping = 0.0
        self._ping_s = watchdog_interval()
        identity = StartRecord(
            rules=rules.digest, healer=__version__, pid=os.getpid(), config=config_digest(config)
        )
        # The parts below are wired once here; reload replaces what changed.
        self.runner = Runner(
            Engine(rules),
            self.journal,
            checker=None,
            now=clock,
            observer=self.observer,
            identity=identity,
        )
        self.daemons = DaemonTable(
            config.shares,
            holder=None,
            feed=None,
            post=self._post,
            generations=self._generation,
            clock=clock,
        )
        self.actions = LiveActions(
            config.shares,
            self.daemons,
            self.workers,
            vmms=config.vmms,
            guests=config.guests,
            alert=config.alert,
            config_file=config.file,
            adopt_wait_s=config.adopt_wait,
            report=lambda event: self._post(ActionReport(self.keys.resolve(event))),
        )
        self.runner.executor = self.actions
        self.runner.checker = self.actions
        self.logs = TailedLogs(
            self.runner,
            self.keys,
            self.observer,
            self.tally,
            clock=clock,
            clock_skew=config.clock_skew,
            vm_keys=vm_keys(config),
        )
        self.feed: StderrFeed | None = None
        self.loop = Loop(
            self.runner,
            self.daemons,
            None,
            self.logs,
            observer=self.observer,
            clock=clock,
            ack=self._ack,
            lost=self._holder_lost,
            every_turn=self._chores,
        )
        self.reloader = Reloader(self)
        self.metrics.limits = self.limit_hits

    # --- life cycle ---------------------------------------------------------------

    def serve(self, stop: threading.Event, reload: threading.Event | None = None) -> int:
        """Start (see the module docstring), loop until ``stop``, stop this process."""
        self.lock = JournalLock.acquire(self.config.journal, config=self.config.file)
        try:
            self._expose()
            self._start()
            self._serve_control()
            self.reloader.wanted = reload or threading.Event()
            with self._watching(stop):
                self.loop.turn()
                self.loop.run(stop)
        finally:
            self.shutdown()
        return 0

    def _start(self) -> None:
        supervised = [s for s in self.config.shares if s.mode == "supervise"]
        if supervised:
            self.holder = self._connect()
            directory = holder_dir(self.config) / "stderr"
            self.feed = StderrFeed(
                directory,
                self.runner,
                observer=self.observer,
                tally=self.tally,
                copies={s.name: s.log for s in supervised},
                clock=self.clock,
                clock_skew=self.config.clock_skew,
            )
            self.daemons.holder, self.daemons.feed = self.holder, self.feed
            self.loop.feed = self.feed
            adopted = self.daemons.attach(self.holder.state)
        else:
            adopted = []
        self.runner.start()  # fold the journal, reconcile what a crash left open
        for event in adopted:
            self.loop.report(event)
        if self.feed is not None:
            for share, generation, path in self.feed.found():
                if share in self.daemons.shares:
                    self.feed.follow(share, generation, None, path)
        self.daemons.listen()
        self.loop.drain()  # the exits the holder kept: decided before anything starts
        self.daemons.first_starts(self._busy)
        self.loop.drain()
        self._learn_devices()
        self.logs.start(tailed_logs(self.config))
        self.ready.set()
        self.notifier.ready(self.status_line())
        log.info(
            "started healer %s (pid %d): config %s (digest %s), rules %s; journal %s at seq %d; "
            "holder pid %s; %s",
            __version__,
            os.getpid(),
            self.config.file,
            config_digest(self.config),
            self.runner.engine.rules.digest,
            self.config.journal,
            self.journal.seq,
            self.holder.state.holder_pid if self.holder is not None else "-",
            self._daemons_line(adopted),
        )

    def _daemons_line(self, adopted: list[Event]) -> str:
        """Per share, whether its virtiofsd was adopted from the holder or started now."""
        taken = {e.share for e in adopted}
        parts = []
        for share in self.config.shares:
            daemon = self.daemons.current.get(share.name)
            if share.mode != "supervise":
                parts.append(f"{share.name} adopted from its launcher (mode adopt)")
            elif daemon is None:
                parts.append(f"{share.name} not running")
            else:
                how = "adopted" if share.name in taken else "started"
                generation = daemon.generation
                parts.append(f"{share.name} {how} pid {daemon.pid} (generation {generation})")
        return f"{len(parts)} share(s): " + ", ".join(parts)

    def _learn_devices(self) -> None:
        """The fs devices cloud-hypervisor has (``vm.info``), so that a line naming only
        a device id it assigned (``_fs0``) reaches its share even when the line that
        created the device was read before this start. Bounded; a VMM that is not up
        (or QEMU, or none configured) leaves the names to the logs."""
        for vmm in self.config.vmms:
            if vmm.kind != "qemu" and vmm.api_socket:
                self._learn_devices_of(vmm)

    def _learn_devices_of(self, vmm: VmmConfig) -> None:
        try:
            if vmm.ch_remote:
                argv = [a.replace("{api_socket}", vmm.api_socket) for a in vmm.ch_remote]
                info = ChRemote(argv).info(timeout_s=DEVICE_LIST_TIMEOUT_S)
            else:
                info = ChApiClient(vmm.api_socket).info(timeout_s=DEVICE_LIST_TIMEOUT_S)
        except (ChError, OSError, ValueError) as exc:
            log.info("VM %s: the VMM's devices were not listed (vm.info: %s)", vmm.name, exc)
            return
        config = info.get("config") if isinstance(info, dict) else None
        listed = config.get("fs") if isinstance(config, dict) else None
        devices = [
            (str(fs["id"]), fs.get("tag"), fs.get("socket"))
            for fs in (listed if isinstance(listed, list) else [])
            if isinstance(fs, dict) and fs.get("id")
        ]
        keys = self.logs.vm_keys.get(vmm.name)
        learnt = keys.learn_devices(devices) if keys is not None else 0
        self.keys.learn_devices(devices)  # (an adopted share's own log)
        log.info(
            "VM %s: the VMM lists %d fs device(s), %d of them this configuration's",
            vmm.name,
            len(devices),
            learnt,
        )

    def _serve_control(self) -> None:
        """The control socket, if it can be had: without it `healer status` reads the
        journal and the commands are refused, but the shares are healed all the same."""
        control = ControlServer(Path(self.config.journal) / CONTROL_SOCKET, self._control)
        try:
            control.start()
        except OSError as exc:
            log.error(
                "control socket %s: %s; healer heals without it (status from the journal, "
                "no commands)",
                control.path,
                exc.strerror or exc,
            )
            return
        self.control = control

    def _control(self, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """A control request (on the control thread): answered on the decision loop."""
        replies: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()

        def work() -> dict[str, Any]:
            source = StatusSource(
                self.config,
                config_digest(self.config),
                self.runner,
                self.daemons,
                self.incidents,
                self.started_at,
                self.clock,
            )
            return answer(source, request, peer)

        self.loop.post(OnLoop(work, replies))
        return wait_answer(replies)

    def shutdown(self) -> None:
        """Stop this process cleanly: daemons and sockets stay with the holder."""
        self.notifier.stopping("stopping; virtiofsd keeps serving")
        if self.control is not None:
            self.control.close()
        self.workers.close()
        self.loop.drain()  # outcomes and exits that came in: journal them
        self.logs.close()
        if self.feed is not None:
            self.feed.close()
        if self.holder is not None:
            self.holder.close()
        self.runner.flush(force=True)
        self.journal.close()
        for exposed in self.exposition:
            exposed.stop()
        self.exposition.clear()
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # --- the holder ---------------------------------------------------------------

    def _connect(self) -> HolderClient:
        return HolderClient.connect(
            holder_dir(self.config),
            start=True,
            on_exit=self.daemons.holder_exit,
            on_lost=lambda: self._post(HolderLost()),
        )

    def _ack(self, share: str, generation: int) -> None:
        if self.holder is None or share not in self.daemons.shares:
            return
        if self.daemons.shares[share].mode != "supervise":
            return
        try:
            self.holder.ack(share, generation)
        except HolderError as exc:
            log.warning("the holder did not take the acknowledgement of %s: %s", share, exc)

    def _holder_lost(self) -> None:
        """The holder died: its daemons go on serving; find or start a holder again."""
        if self._lost_at is None:
            log.error("the holder is gone; its virtiofsd keep serving; starting a new one")
            self._lost_at = self.clock()
        self._reconnect()

    def _reconnect(self) -> None:
        old = self.holder
        try:
            holder = self._connect()
        except HolderError as exc:
            log.warning("no holder yet (%s); trying again", exc)
            return
        if old is not None:
            for name, sock in old.listeners.items():  # give the new holder our copies
                share = self.daemons.shares.get(name)
                if share is not None and share.mode == "supervise":
                    holder.listen(name, share.socket, fd=sock)
            old.close()
        self.holder = self.daemons.holder = holder
        for event in self.daemons.attach(holder.state):
            self.loop.report(event)
        self.daemons.listen()
        self._lost_at = None
        log.info("holder %d connected again", holder.state.holder_pid)

    # --- what the loop does besides deciding ----------------------------------------

    def _chores(self) -> float | None:
        """Once a turn: reload, reconnect, watchdog ping; returns when it wants a turn."""
        wake = None
        while self.ignored_signals:
            name = signal.Signals(self.ignored_signals.popleft()).name
            log.warning("%s ignored (SIGHUP reloads, SIGTERM stops)", name)
        if self.reloader.wanted.is_set():
            self.reloader.wanted.clear()
            self.reloader.reload()
        if self._lost_at is not None:
            self._reconnect()
            wake = self.clock() + RECONNECT_S
        if self._ping_s is not None:
            if self.clock() >= self._next_ping:
                self.notifier.watchdog()
                self.notifier.status(self.status_line())
                self._next_ping = self.clock() + self._ping_s / 2
            wake = min(wake or self._next_ping, self._next_ping)
        return wake

    def status_line(self) -> str:
        """One line for ``systemctl status``: shares served, failing, circuits open."""
        shares = self.runner.state.shares
        phases = [
            shares[s.name].phase if s.name in shares else Phase.HEALTHY for s in self.config.shares
        ]
        served = sum(
            1
            for share, phase in zip(self.config.shares, phases, strict=True)
            if phase == Phase.HEALTHY and self.daemons.running(share.name)
        )
        failing = sum(1 for phase in phases if phase in (Phase.FAILING, Phase.RECOVERING))
        circuits = sum(1 for phase in phases if phase == Phase.CIRCUIT_OPEN)
        degraded = "; journal not writable" if self.runner.degraded else ""
        return (
            f"{len(phases)} share(s): {served} served, {failing} failing, "
            f"{circuits} circuit(s) open{degraded}"
        )

    def _post(self, message: Message) -> None:
        self.loop.post(message)

    def _worker_done(self, key: str, status: Status, detail: str) -> None:
        self.loop.post(ActionDone(key, status, detail))

    def _generation(self, name: str) -> int | None:
        share = self.runner.state.shares.get(name)
        return share.generation if share is not None else None

    def _busy(self, name: str) -> bool:
        """A share in an incident: its daemon is started by a decision, not at start."""
        share = self.runner.state.shares.get(name)
        return share is not None and share.phase != Phase.HEALTHY

    def limit_hits(self) -> dict[str, int]:
        return {
            "action_queue": self.workers.rejected,
            "clock_skew": self.tally.future_times,
            "line_length": self.logs.lines_cut + (self.feed.lines_cut if self.feed else 0),
            "metrics_connections": sum(
                e.refused for e in self.exposition if isinstance(e, MetricsServer)
            ),
        }

    def daemon_pid(self, name: str) -> int | None:
        """The pid of the share's running virtiofsd (the demo and tests ask)."""
        return self.daemons.pid(name)

    # --- watching files and exposing metrics ------------------------------------------

    @contextlib.contextmanager
    def _watching(self, stop: threading.Event) -> Iterator[None]:
        paths = list(self.logs.paths)
        if self.feed is not None:
            self.feed.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            paths.append(str(self.feed.directory))
        done = threading.Event()
        if paths:
            self.loop.files_changed.set()  # read what is there now
            watcher = threading.Thread(
                target=self._notify, args=(paths, done), name="notify", daemon=True
            )
            watcher.start()
        try:
            yield
        finally:
            done.set()

    def _notify(self, paths: list[str], stop: threading.Event) -> None:
        # The loop polls everything once a tick anyway: the watcher only has to say "now".
        if self.config.notify == "inotify":
            try:
                for _changed in watch_inotify(paths, stop=stop, poll_interval_s=60.0):
                    self.loop.changed()
                return
            except OSError as exc:  # no inotify (or out of instances): the portable way
                log.warning("inotify is not available (%s): watching with watchfiles", exc)
        step = self.config.notify_step_ms
        for _changed in watch_files(paths, stop=stop, poll_interval_s=60.0, step_ms=step):
            self.loop.changed()

    def _expose(self) -> None:
        """``/metrics`` on the configured address; the textfile, when configured. One
        that cannot start is logged and healer runs on (the failing scrape alerts)."""
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
