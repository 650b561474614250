"""Every share's current virtiofsd: started through the holder, or found and watched.

A supervised share's daemon is started by the holder (:mod:`healer.holder`), which
owns the listening socket and is the daemon's parent, so the daemon outlives this
process; an adopted share's daemon is someone else's, found by its pid file or as the
owner of the socket and watched through a pidfd. Either way each daemon gets the next
*generation* number of its share, and healer reports its start and its end as events
(``VirtiofsdStarted``, ``VirtiofsdExited``) on a stream of its own whose positions are
derived from the generation, so a report delivered twice (the holder re-sends an exit
this process may have journaled just before it died) is journaled once.

Before a daemon is started, dead connections at the head of the socket's backlog (a
probe, a VMM that died while it waited) are accepted and closed, so the new daemon's
one client is a live one (:func:`healer.supervise.backlog.drain_dead`).

The decision loop owns this table; actions reach it through the ``Daemons`` protocol
(:mod:`healer.actions.live`), from worker threads only through :meth:`request_start`.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from healer.config import ShareConfig
from healer.events import Event, Origin, VirtiofsdExited, VirtiofsdStarted
from healer.holder.client import HolderClient, HolderError
from healer.holder.protocol import Exited, HolderState
from healer.live.messages import DaemonGone, Message, StartWanted
from healer.live.stderr import StderrFeed
from healer.supervise import AdoptedVirtiofsd, find_virtiofsd, has_client, virtiofsd_argv
from healer.supervise.backlog import drain_dead

__all__ = ["Daemon", "DaemonTable", "daemon_stream"]

log = logging.getLogger(__name__)

RESTART_GRACE_S = 1.0  # a daemon that lost its client exits within this
_SLOTS = 8  # positions per generation on a share's daemon stream
_STARTED, _EXITED = 0, 1


def daemon_stream(share: str) -> str:
    """The stream of healer's own reports about a share's daemons."""
    return f"healer:{share}"


@dataclass(slots=True)
class Daemon:
    """One daemon instance of a share."""

    generation: int
    pid: int
    started_at: float
    alive: bool = True
    adopted: bool = False  # not started by this healer's holder just now


class DaemonTable:
    """The shares' daemons; see the module docstring."""

    def __init__(
        self,
        shares: Sequence[ShareConfig],
        *,
        holder: HolderClient | None,
        feed: StderrFeed | None,
        post: Callable[[Message], None],
        generations: Callable[[str], int | None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.shares = {s.name: s for s in shares}
        self.holder = holder
        self.feed = feed
        self.post = post
        self.generations = generations  # the newest generation the journal knows
        self.clock = clock
        self.current: dict[str, Daemon] = {}
        self.restarts: dict[str, tuple[int, str, float]] = {}  # share -> (gen, key, due)
        self.adopted = {
            s.name: AdoptedVirtiofsd(s.socket, s.pid_file) for s in shares if s.mode == "adopt"
        }
        self._highest: dict[str, int] = {}
        self._argv: dict[str, list[str]] = {}
        self.unreported: list[Event] = []  # starts the loop has not journaled yet

    # --- start-up -----------------------------------------------------------------

    def attach(self, state: HolderState) -> list[Event]:
        """Take over what the holder runs; exits it kept arrive as messages.

        Returns a ``VirtiofsdStarted`` (adopted) for every daemon that still runs: the
        journal may or may not know it already (its position says).
        """
        events = []
        for share in state.shares:
            daemon = share.daemon
            if share.name not in self.shares or daemon is None:
                continue
            self._seen(share.name, daemon.generation)
            self.current[share.name] = Daemon(
                daemon.generation, daemon.pid, daemon.started_at, adopted=True
            )
            if self.feed is not None:
                path = self._stderr_path(share.name, daemon.generation)
                self.feed.follow(share.name, daemon.generation, daemon.pid, path)
            served = has_client(self.shares[share.name].socket)
            events.append(self._started(share.name, self.current[share.name], served=served))
        for gone in state.exits:
            self._seen(gone.share, gone.generation)
            self.holder_exit(gone)
        return events

    def listen(self) -> None:
        """Every supervised share's socket held by the holder (kept if it holds it)."""
        if self.holder is None:
            return
        for name, share in self.shares.items():
            if share.mode == "supervise":
                self.holder.listen(name, share.socket)

    def first_starts(self, busy: Callable[[str], bool]) -> None:
        """Start the daemons of supervised shares that have none (and no incident)."""
        for name, share in self.shares.items():
            if share.mode == "supervise" and name not in self.current and not busy(name):
                self.start(name)

    # --- a reload ---------------------------------------------------------------------

    def add(self, share: ShareConfig) -> None:
        """A share added by a reload (the caller listens and starts it)."""
        self.shares[share.name] = share
        if share.mode == "adopt":
            self.adopted[share.name] = AdoptedVirtiofsd(share.socket, share.pid_file)

    def update(self, share: ShareConfig) -> None:
        """A share whose settings changed: its next daemon starts with them."""
        self.shares[share.name] = share
        self._argv.pop(share.name, None)

    def remove(self, name: str) -> None:
        """A share removed by a reload (the caller has the holder release it)."""
        self.shares.pop(name, None)
        self.adopted.pop(name, None)
        self.current.pop(name, None)
        self.restarts.pop(name, None)
        self._argv.pop(name, None)

    # --- what actions ask (Daemons) ------------------------------------------------

    def running(self, name: str) -> bool:
        if name in self.adopted:
            return self.adopted[name].running()
        daemon = self.current.get(name)
        return daemon is not None and daemon.alive

    def pid(self, name: str) -> int | None:
        daemon = self.current.get(name)
        return daemon.pid if daemon is not None and self.running(name) else None

    def start(self, name: str) -> str | None:
        """Start the share's next daemon through the holder (decision loop only);
        returns why it could not be started, or None."""
        if self.holder is None:
            return "no holder"
        if self.running(name):
            return None
        listener = self.holder.listeners.get(name)
        if listener is not None:
            drained = drain_dead(listener)
            if drained is not None and drained.dropped:
                log.info("share %s: %d dead connection(s) dropped", name, drained.dropped)
        generation = self._next_generation(name)
        try:
            spawned = self.holder.spawn(name, generation, self.argv(name))
        except HolderError as exc:
            log.error("virtiofsd for share %s could not be started: %s", name, exc)
            return str(exc)[:500]
        self._seen(name, generation)
        daemon = Daemon(generation, spawned.pid, spawned.started_at)
        self.current[name] = daemon
        if self.feed is not None:
            self.feed.follow(name, generation, spawned.pid, Path(spawned.stderr_path))
        # Journaled by the loop before the next message it handles: an exit the holder
        # reports at once is a message, and must not overtake its own start.
        self.unreported.append(self._started(name, daemon, served=False))
        return None

    def take_started(self) -> list[Event]:
        """The ``VirtiofsdStarted`` of the starts since the last call (loop only)."""
        started, self.unreported = self.unreported, []
        return started

    def request_start(self, name: str) -> None:
        self.post(StartWanted(name))

    def restart_after_exit(self, name: str, pid: int, key: str) -> bool:
        """Start the next daemon the moment ``pid`` exits; False if it is gone already."""
        daemon = self.current.get(name)
        if daemon is None or not daemon.alive or daemon.pid != pid or name in self.adopted:
            return False
        self.restarts[name] = (daemon.generation, key, self.clock() + RESTART_GRACE_S)
        return True

    def terminate(self, name: str, key: str) -> bool:
        """An operator's restart: SIGTERM the running daemon and start the next the
        moment it exits; False if none runs (the caller starts one)."""
        daemon = self.current.get(name)
        if self.holder is None or daemon is None or not daemon.alive or name in self.adopted:
            return False
        self.restarts[name] = (daemon.generation, key, self.clock() + RESTART_GRACE_S)
        self.holder.signal(name, daemon.generation, signal.SIGTERM)
        return True

    def argv(self, name: str) -> list[str]:
        """The share's virtiofsd argv, placeholders filled from the configuration."""
        if name not in self._argv:
            share = self.shares[name]
            argv = list(share.virtiofsd)
            if not argv:
                found = find_virtiofsd()
                if found is None:
                    msg = "no virtiofsd is installed; set share.virtiofsd or install it"
                    raise HolderError(msg)
                argv = virtiofsd_argv(*found, shared_dir=share.shared_dir)
            self._argv[name] = [
                a.replace("{shared_dir}", share.shared_dir).replace("{tag}", share.tag)
                for a in argv
            ]
        return self._argv[name]

    # --- what the loop is told -------------------------------------------------------

    def holder_exit(self, gone: Exited) -> None:
        """From the holder client's thread: hand the exit to the loop."""
        self.post(gone)

    def gone(self, message: DaemonGone) -> tuple[Event, str | None]:
        """A daemon ended: its ``VirtiofsdExited``, and the key of a respawn that waited
        for it (the loop starts the next daemon and completes that key)."""
        daemon = self.current.get(message.share)
        if daemon is not None and daemon.generation == message.generation:
            daemon.alive = False
        lines = []
        if self.feed is not None:  # its own last lines are decided on first
            lines = self.feed.ended(message.share, message.generation)
        waiting = self.restarts.get(message.share)
        key = None
        if waiting is not None and waiting[0] == message.generation:
            key = waiting[1]
            del self.restarts[message.share]
        return self._exited(message, lines), key

    def overdue(self) -> list[tuple[str, str]]:
        """Respawns whose daemon kept its client after all: (share, key) to complete."""
        now = self.clock()
        due = [(n, key) for n, (_, key, at) in self.restarts.items() if now >= at]
        for name, _ in due:
            del self.restarts[name]
        return due

    def look_for_adopted(self) -> list[Event]:
        """Adopted shares without a daemon: is there a new one? Its start, if found."""
        found = []
        for name, adopted in self.adopted.items():
            if adopted.running():
                continue
            pid = adopted.locate()
            if pid is None:
                continue
            generation = self._next_generation(name)
            self._seen(name, generation)
            daemon = self.current[name] = Daemon(generation, pid, self.clock(), adopted=True)
            adopted.watch_exit(pid, self._exit_watcher(name, generation))
            served = has_client(self.shares[name].socket)
            found.append(self._started(name, daemon, served=served))
        return found

    def _exit_watcher(self, name: str, generation: int) -> Callable[[int], None]:
        def gone(pid: int) -> None:  # on the pidfd's thread
            self.post(DaemonGone(name, generation, pid, None, None, self.clock(), False))

        return gone

    # --- healer's own reports ----------------------------------------------------------

    def _started(self, name: str, daemon: Daemon, *, served: bool) -> Event:
        how = "adopted" if daemon.adopted else "started"
        return VirtiofsdStarted(
            time=datetime.fromtimestamp(daemon.started_at, UTC),
            source=daemon_stream(name),
            offset=daemon.generation * _SLOTS + _STARTED,
            line=daemon.generation,
            share=name,
            level="INFO",
            message=f"virtiofsd {daemon.pid} {how} for share {name} (generation "
            f"{daemon.generation}){', a client connected' if served else ''}",
            origin=Origin(program="virtiofsd", pid=daemon.pid, generation=daemon.generation),
            adopted=daemon.adopted,
            served=served,
        )

    def _exited(self, message: DaemonGone, lines: list[bytes]) -> Event:
        if not message.known:
            detail = "exit status unknown: not healer's child"
        elif message.signal is not None:
            detail = f"killed by {message.signal}"
        else:
            detail = f"exit status {message.code}"
        return VirtiofsdExited(
            time=datetime.fromtimestamp(message.at, UTC),
            source=daemon_stream(message.share),
            offset=message.generation * _SLOTS + _EXITED,
            line=message.generation,
            share=message.share,
            level="WARN",
            message=f"virtiofsd {message.pid} for share {message.share} exited ({detail})",
            raw=b"\n".join(lines).decode("utf-8", "replace")[-4096:],
            origin=Origin(program="virtiofsd", pid=message.pid, generation=message.generation),
            name="virtiofsd",
            status=message.code,
            signal=message.signal,
            reporter="healer",
        )

    def _next_generation(self, name: str) -> int:
        """Above every generation of the share the journal or this process has seen."""
        return max(self.generations(name) or 0, self._highest.get(name, 0)) + 1

    def _seen(self, name: str, generation: int) -> None:
        self._highest[name] = max(self._highest.get(name, 0), generation)

    def _stderr_path(self, name: str, generation: int) -> Path:
        assert self.feed is not None  # noqa: S101 - only called with a feed
        return self.feed.directory / f"{name}.{generation}.log"
