"""``healer watch``: the live loop around the same engine, journal and runner.

One thread decides; helper threads only feed a bounded queue: each supervised
virtiofsd's stderr lines and its exit (seen the moment ``wait`` returns). Every
input goes through the runner (journal first, then act); decisions whose backoff
has not passed wait in the runner and run when due. SIGTERM/SIGINT stop the loop:
children are stopped and the held sockets removed. A healer killed with -9 takes
its virtiofsd along (parent-death signal) and resumes from the journal.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from healer.actions import GuestRemount, RemountFailed
from healer.config import Config, ShareConfig, SourceConfig
from healer.engine import Decision, Engine, RuleSet
from healer.events import Event, Origin, VirtiofsdExited
from healer.journal import Journal
from healer.parse import Checkpoint, SourceParser
from healer.runner import Runner
from healer.sources.tail import FileTailer, TailBatch, TailPosition, watch_files
from healer.supervise import (
    ExitStatus,
    HeldSocket,
    SupervisedVirtiofsd,
    find_virtiofsd,
    virtiofsd_argv,
)
from healer.vmm import (
    ChApiClient,
    ChError,
    ChRemote,
    ChTimeout,
    FsShare,
    ReaddError,
    readd_fs,
)

__all__ = ["Watchdog"]

log = logging.getLogger(__name__)

QUEUE_LIMIT = 10_000
TICK_S = 1.0


@dataclass(slots=True)
class _Tailed:
    """A configured log at run time: its tailer and the parser of its current file."""

    config: SourceConfig
    tailer: FileTailer
    resume: Checkpoint | None = None
    parser: SourceParser | None = None
    stream: str = ""


@dataclass(slots=True)
class _Share:
    """A supervised share at run time."""

    config: ShareConfig
    held: HeldSocket
    daemon: SupervisedVirtiofsd
    parser: SourceParser | None = None
    offset: int = 0
    exits: int = 0
    sources: dict[int, str] = field(default_factory=dict)


class Watchdog:
    """Supervises the configured shares and heals them by the rules."""

    def __init__(
        self, config: Config, rules: RuleSet, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.clock = clock
        self.inputs: queue.Queue[tuple[str, str, object]] = queue.Queue(QUEUE_LIMIT)
        self.dropped = 0
        self.journal = Journal(config.journal, fsync=config.fsync)
        self.runner = Runner(Engine(rules), self.journal, self, checker=self, now=clock)
        self.shares: dict[str, _Share] = {}
        self.tailed: list[_Tailed] = []

    # --- life cycle ---------------------------------------------------------------

    def serve(self, stop: threading.Event) -> int:
        """Start, loop until ``stop`` is set, shut down cleanly; returns an exit code."""
        for share in self.config.shares:
            if share.mode == "supervise":
                self.shares[share.name] = self._supervise(share)
        for name in self.shares:
            self._start(name)
        self.runner.start()  # fold the journal, reconcile what a crash left open
        self._tail_sources()
        if self.tailed:
            paths = [t.config.path for t in self.tailed]
            threading.Thread(target=self._notify, args=(paths, stop), daemon=True).start()
        try:
            self._loop(stop)
        finally:
            self.shutdown()
        return 0

    def _tail_sources(self) -> None:
        """Tailers resume where the journal says each log was read up to."""
        for source in self.config.sources:
            position = self.runner.tails.get(source.name)
            start = TailPosition.from_dict(position) if position else None
            tailed = _Tailed(source, FileTailer(source.path, start=start))
            tailed.resume = self.runner.checkpoints.get(source.name) if start else None
            self.tailed.append(tailed)

    def _notify(self, paths: list[str], stop: threading.Event) -> None:
        # The loop itself polls the logs every TICK_S: the watcher only has to say
        # "now" between ticks, so its own safety-net poll can be rare.
        for _changed in watch_files(paths, stop=stop, poll_interval_s=60.0):
            if self.inputs.empty():  # one pending poll is enough
                self._put("poll", "", None)

    def shutdown(self) -> None:
        for tailed in self.tailed:
            tailed.tailer.close()
        for share in self.shares.values():
            share.daemon.stop()
            share.held.close()
        self.journal.close()

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
            argv, held, on_line=lambda line: self._put("line", share.name, line)
        )
        return _Share(share, held, daemon)

    def _start(self, name: str) -> None:
        share = self.shares[name]
        pid = share.daemon.start()
        share.parser = SourceParser(f"virtiofsd:{name}:{pid}", default_year=self._now().year)
        share.offset = 0
        daemon = share.daemon
        threading.Thread(target=self._await_exit, args=(name, daemon, pid), daemon=True).start()

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

    # --- the loop -----------------------------------------------------------------

    def _loop(self, stop: threading.Event) -> None:
        next_tick = self.clock() + TICK_S
        while not stop.is_set():
            due = self.runner.next_due()
            wait = min(next_tick, due if due is not None else next_tick) - self.clock()
            try:
                kind, name, payload = self.inputs.get(timeout=max(0.0, min(wait, TICK_S)))
            except queue.Empty:
                kind = ""
            if kind == "line":
                self._on_line(name, payload)  # type: ignore[arg-type]
            elif kind == "exit":
                self._on_exit(name, *payload)  # type: ignore[misc]
            if kind in ("poll", "") and self.tailed:
                self._read_sources()
            self.runner.run_due()
            if self.clock() >= next_tick:
                self.runner.tick(self.clock())
                next_tick = self.clock() + TICK_S

    def _read_sources(self) -> None:
        for tailed in self.tailed:
            read = False
            for _ in range(64):  # bounded: a huge backlog is read over several turns
                for batch in tailed.tailer.poll():
                    self._on_batch(tailed, batch)
                    read = True
                if tailed.tailer.at_eof:
                    break
            if read and tailed.tailer.at_eof and tailed.parser is not None:
                self._flush(tailed)

    def _flush(self, tailed: _Tailed) -> None:
        """Live, the last record is complete when the writer stopped: decide on it now.

        (Replay waits for the next line to see whether it continues the record; a
        live writer puts a record's lines in one write, so they arrive together.)
        """
        assert tailed.parser is not None  # noqa: S101 - checked by the caller
        events = [i for i in tailed.parser.close() if isinstance(i, Event)]
        point = tailed.parser.checkpoint()
        identity = tailed.tailer.position.identity
        tail = TailPosition(identity, point.offset).to_dict()
        self.runner.ingest(events, (tailed.config.name, point), stream=tailed.stream, tail=tail)

    def _on_batch(self, tailed: _Tailed, batch: TailBatch) -> None:
        name = tailed.config.name
        if batch.kind == "lines" and tailed.parser is None:
            tailed.parser = SourceParser(name, default_year=self._now().year, resume=tailed.resume)
            tailed.resume = None
        if batch.identity is not None and batch.kind != "end":
            tailed.stream = f"{name}@{batch.identity.device}:{batch.identity.inode}"
        if batch.kind == "lines" and tailed.parser is not None:
            items = tailed.parser.feed(batch.block, batch.offset, ingest=self._now())
            point = tailed.parser.checkpoint()
            tail = TailPosition(batch.identity, point.offset).to_dict()
            events = [i for i in items if isinstance(i, Event)]
            self.runner.ingest(events, (name, point), stream=tailed.stream, tail=tail)
            return
        if tailed.parser is not None:  # a file ends or a new one starts
            events = [i for i in tailed.parser.close() if isinstance(i, Event)]
            self.runner.ingest(events, stream=tailed.stream)
        tailed.parser = None
        if batch.kind == "start":
            tailed.parser = SourceParser(name, default_year=self._now().year)

    def _on_line(self, name: str, line: bytes) -> None:
        share = self.shares[name]
        if share.parser is None:
            return
        data = line + b"\n"
        items = share.parser.feed(data, share.offset, ingest=self._now())
        share.offset += len(data)
        if self.inputs.empty():  # no more lines waiting: the last record is complete
            items += share.parser.close()
        pid, tag = share.daemon.pid, share.config.tag
        events = [self._about(i, pid, tag) for i in items if isinstance(i, Event)]
        if events:
            self.runner.ingest(events)

    @staticmethod
    def _about(event: Event, pid: int | None, tag: str) -> Event:
        """Lines read from a daemon's stderr are about that process and its share."""
        origin = replace(event.origin, program="virtiofsd", pid=pid)
        return replace(event, share=event.share or tag, origin=origin)

    def _on_exit(self, name: str, pid: int, status: ExitStatus) -> None:
        share = self.shares[name]
        if share.parser is not None:  # lines still buffered in the parser
            events = [i for i in share.parser.close() if isinstance(i, Event)]
            if events:
                self.runner.ingest(events)
        share.exits += 1
        detail = (
            f"exit status {status.code}" if status.signal is None else f"killed by {status.signal}"
        )
        last = b"\n".join(share.daemon.last_lines).decode("utf-8", "replace")
        event = VirtiofsdExited(
            time=self._now(),
            source=f"healer:{name}",
            offset=time.time_ns(),  # increasing across healer restarts too
            line=share.exits,
            share=share.config.tag,
            level="WARN",
            message=f"virtiofsd {pid} for share {name} exited ({detail})",
            raw=last[-4096:],
            name="virtiofsd",
            status=status.code,
            signal=status.signal,
            reporter="healer",
            origin=Origin(program="virtiofsd", pid=pid),
        )
        log.warning("%s", event.message)
        self.runner.ingest([event])

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    # --- actions (the runner's executor and checker) -------------------------------

    def _share_for(self, decision: Decision) -> _Share | None:
        for share in self.shares.values():
            if decision.share in (share.config.name, share.config.tag, share.config.socket):
                return share
        if decision.share == "default" and len(self.shares) == 1:
            return next(iter(self.shares.values()))
        return None

    def run(self, decision: Decision) -> str:
        """Executor: carry out one decision; returns succeeded, failed or timed_out."""
        share = self._share_for(decision)
        action = decision.action
        if action in ("notify", "open_circuit"):
            log.warning("%s for share %s (rule %s)", action, decision.share, decision.rule)
            return "succeeded"
        if share is None:
            log.error("no supervised share %r for %s", decision.share, action)
            return "failed"
        if action in ("respawn_virtiofsd", "ensure_virtiofsd"):
            running = share.daemon.proc is not None and share.daemon.poll() is None
            # A daemon that lost its client exits by itself: give it a moment.
            if running and (action == "ensure_virtiofsd" or share.daemon.wait(1.0) is None):
                return "succeeded"
            self._start(share.config.name)
            return "succeeded"
        if action == "remount_guest":
            return self._remount(share)
        if action == "readd_fs":
            return self._readd(share)
        log.error("action %s is not available in this version", action)
        return "failed"

    def _readd(self, share: _Share) -> str:
        """Remove the fs device, wait until it is gone and virtiofsd runs, add it again."""
        vmm = self.config.vmm
        if vmm is None:
            log.info("no [vmm] configured: re-add of %s skipped", share.config.name)
            return "closed"
        api: ChApiClient | ChRemote
        if vmm.ch_remote:
            api = ChRemote([a.replace("{api_socket}", vmm.api_socket) for a in vmm.ch_remote])
        else:
            api = ChApiClient(vmm.api_socket)
        fs = FsShare(tag=share.config.tag, socket=share.config.socket, device_id=share.config.name)

        def ready() -> bool:
            # Removing the device ended virtiofsd's one client, so it exits: start a
            # fresh one here (the loop waits for this action). Never connect to check.
            if share.daemon.proc is None or share.daemon.poll() is not None:
                self._start(share.config.name)
            return share.daemon.poll() is None

        try:
            done = readd_fs(api, fs, is_ready=ready)
        except ChTimeout as exc:
            log.error("re-add of %s timed out: %s", share.config.name, exc)
            return "timed_out"
        except (ChError, ReaddError) as exc:
            log.error("re-add of %s failed: %s", share.config.name, exc)
            return "failed"
        log.warning("re-added %s as %s", share.config.name, done.device_id)
        return "succeeded"

    def _remount(self, share: _Share) -> str:
        if self.config.guest is None:
            log.info("no [guest] transport configured: remount of %s skipped", share.config.name)
            return "closed"
        remount = GuestRemount(self.config.guest, share.config.tag)
        try:
            remount.run()
        except RemountFailed as exc:
            log.error(
                "remount of %s failed after %d attempts: %s",
                share.config.name,
                remount.attempts,
                exc,
            )
            return "failed"
        return "succeeded"

    def check(self, decision: Decision) -> str:
        """Checker: after a crash, was a started action done?"""
        share = self._share_for(decision)
        if decision.action in ("respawn_virtiofsd", "ensure_virtiofsd"):
            running = share is not None and share.daemon.poll() is None and share.daemon.proc
            return "done" if running else "redo"
        return "done" if decision.action in ("notify", "open_circuit") else "redo"
