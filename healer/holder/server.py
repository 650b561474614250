"""The holder: owns the shares' listening sockets and is the parent of every virtiofsd.

It does nothing else: no parsing, no rules, no journal, no decisions. The brain
(``healer watch``) tells it what to do over a private control socket and is told when
a daemon ends. Because the data path lives here, the brain may crash, be restarted or
upgraded without a VMM noticing: the daemons keep serving, and a VMM that connects
meanwhile waits in the socket's backlog. One thread, one ``select`` loop, no polling
while idle.

Its directory (``<journal>/holder``, 0700) holds ``holder.lock`` (one holder per
directory), ``holder.sock`` (the control socket, 0600, one brain at a time, peer
credentials checked), ``holder.json`` (see :mod:`healer.holder.state`) and
``stderr/<share>.<generation>.log``, each daemon's stderr, which the holder opens and
never reads. Under systemd it says READY=1 and keeps each listener in the service's
file-descriptor store, so even a holder restart loses no socket.

Signals: SIGTERM stops everything (daemons, sockets); SIGINT, SIGHUP, SIGUSR1,
SIGUSR2 and SIGPIPE are ignored and logged. The holder is its daemons' subreaper: a
daemon's own child that outlives it (the Rust daemon's sandbox child, which holds the
listener; the C daemon's session child) is reparented here. Such a leftover can only
be dying, yet while it lives it may accept a VMM's connect and drop it, so the holder
kills it at once and tells the daemon's exit only once it is gone (at most
``SETTLE_S``): the next daemon never shares the listener with a dying one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from healer.holder import protocol as p
from healer.holder.errors import Refused
from healer.holder.sockets import bind, bound_to, file_inode, peer
from healer.holder.state import Daemon, Share, Store, start_time
from healer.logline import format_line, journal_is
from healer.supervise.held import bind_private
from healer.supervise.process import children
from healer.systemd import Notifier, listen_fds

__all__ = ["Holder", "say"]

_IGNORED = (signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE)
_HANDLED = (signal.SIGTERM, signal.SIGCHLD, *_IGNORED)
_SAFETY_S = 60.0  # the loop looks at its children this often even with nothing to do
SETTLE_S = 1.0  # the longest a daemon's exit report waits for its leftover children


@dataclass(slots=True)
class _Settling:
    """A daemon that exited while processes it started still ran: its report waits."""

    share: Share
    daemon: Daemon
    code: int | None
    signal: str | None
    leftovers: set[int]
    deadline: float


_TO_JOURNAL = journal_is(sys.stderr, os.environ)


def say(text: str, level: int = logging.INFO) -> None:
    """One line to stderr: for journald under systemd (a priority prefix), else with
    its time, the holder's name and pid (healer/logline.py)."""
    line = format_line(
        level,
        text,
        name="healer-holder",
        pid=os.getpid(),
        journald=_TO_JOURNAL,
        at=datetime.now(UTC),
    )
    print(line, file=sys.stderr, flush=True)


class Holder:
    """One holder directory's state and loop."""

    def __init__(self, directory: Path, lock: int, notifier: Notifier | None = None) -> None:
        self.directory = directory
        self.lock = lock  # held for life; passed on across a reexec
        self.stderr = directory / "stderr"
        self.notifier = notifier or Notifier.from_environ()
        self.store = Store(directory / "holder.json")
        self.shares: dict[str, Share] = {}
        self.exits: list[p.Exited] = []
        self.started_at = time.time()
        self.reexecs = 0
        self.selector = selectors.DefaultSelector()
        self.brain: socket.socket | None = None
        self.control: socket.socket | None = None
        self.buffer = bytearray(p.MAX_MESSAGE)
        self.stopping = False
        self._ignored_said: set[int] = set()
        self.settling: list[_Settling] = []
        self._outlived: set[int] = set()  # leftovers waited for in vain: not waited for again

    # --- start-up -----------------------------------------------------------------

    def restore(self, inherited: dict[str, Any] | None = None) -> None:
        """Take over what the last holder (or this one before a reexec) had."""
        restored: dict[str, list[int]] = {}
        if inherited is not None:
            self._from_reexec(inherited)
        else:
            shares, self.exits = self.store.load()
            for share in shares:
                self.shares[share.name] = share
                daemon = share.daemon
                if daemon is not None and not self._adopt(share, daemon):
                    share.daemon = None
            restored = listen_fds()
        for name, fds in restored.items():
            kept = self.shares.get(name)
            for fd in fds:
                sock = socket.socket(fileno=fd)
                if kept is not None and kept.listener is None and bound_to(sock, kept):
                    kept.listener = sock
                    kept.inode = kept.inode or file_inode(kept.socket)
                    say(f"listener of {name} taken back from the service manager")
                else:
                    sock.close()
        self._save()

    def _adopt(self, share: Share, daemon: Daemon) -> bool:
        """A daemon the last holder ran: watched again if it is the same process."""
        if daemon.starttime is None or start_time(daemon.pid) != daemon.starttime:
            self._exited(share, daemon, None, None, known=False)
            say(f"virtiofsd {daemon.pid} of {share.name} is gone (it ran under the last holder)")
            return False
        try:
            daemon.pidfd = os.pidfd_open(daemon.pid)
        except ProcessLookupError:
            self._exited(share, daemon, None, None, known=False)
            return False
        daemon.child = False
        self.selector.register(daemon.pidfd, selectors.EVENT_READ, ("pidfd", share.name))
        say(f"adopted virtiofsd {daemon.pid} of {share.name} (generation {daemon.generation})")
        return True

    def bind_control(self) -> None:
        """The control socket: bound now, or the one the image before this one had (a
        brain that connects while the image is replaced waits in its backlog)."""
        if self.control is not None:
            self.control.setblocking(False)
            self.selector.register(self.control, selectors.EVENT_READ, ("control", ""))
            return
        path = self.directory / "holder.sock"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # we hold the lock: a socket file left here is a dead holder's
        control = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        bind_private(control, str(path))
        control.listen(4)
        control.setblocking(False)
        self.control = control
        self.selector.register(control, selectors.EVENT_READ, ("control", ""))

    # --- the loop -----------------------------------------------------------------

    def serve(self) -> int:
        read, write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(write)
        for number in _HANDLED:
            signal.signal(number, lambda *_: None)  # the wakeup fd carries the number
        self.selector.register(read, selectors.EVENT_READ, ("signals", ""))
        self._reap()  # children that ended while the image was being replaced
        self.notifier.ready(self._status())
        say(f"holding {len(self.shares)} share(s) in {self.directory}")
        while not self.stopping:
            for key, _ in self.selector.select(self._timeout()):
                kind, name = key.data
                if kind == "signals":
                    self._signals(read)
                elif kind == "control":
                    self._accept()
                elif kind == "brain":
                    self._from_brain()
                elif kind == "pidfd":
                    self._adopted_gone(name)
            self._reap()
        self._shutdown()
        return 0

    def _signals(self, fd: int) -> None:
        with contextlib.suppress(BlockingIOError):
            for number in os.read(fd, 512):
                if number == signal.SIGTERM:
                    say("SIGTERM: stopping every share")
                    self.stopping = True
                elif number in _IGNORED and number not in self._ignored_said:
                    self._ignored_said.add(number)
                    say(f"{signal.Signals(number).name} ignored (SIGTERM stops the holder)")

    def _reap(self) -> None:
        """Collect every child that ended: a daemon's exit, or a stray (subreaped)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            for share in self.shares.values():
                daemon = share.daemon
                if daemon is not None and daemon.child and daemon.pid == pid:
                    code = os.waitstatus_to_exitcode(status)
                    name = signal.Signals(-code).name if code < 0 else None
                    self._ended(share, daemon, None if code < 0 else code, name)
                    break
            else:
                for settling in self.settling:
                    settling.leftovers.discard(pid)
                self._outlived.discard(pid)
        self._settle()

    def _ended(self, share: Share, daemon: Daemon, code: int | None, sig: str | None) -> None:
        """A daemon process ended: told now, or once the processes it left are gone."""
        if any(s.daemon is daemon for s in self.settling):
            return
        leftovers = self._leftovers()
        if not leftovers:
            self._exited(share, daemon, code, sig, known=True)
            return
        for pid in leftovers:  # dying anyway; alive, one could take a connect and drop it
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + SETTLE_S
        self.settling.append(_Settling(share, daemon, code, sig, leftovers, deadline))

    def _leftovers(self) -> set[int]:
        """The holder's children that are no daemon of a share: processes a daemon that
        ended had started, reparented here (the holder is their subreaper)."""
        daemons = {
            s.daemon.pid for s in self.shares.values() if s.daemon is not None and s.daemon.child
        }
        return set(children(os.getpid())) - daemons - self._outlived

    def _settle(self) -> None:
        """Tell the exits whose leftovers are gone, or that waited ``SETTLE_S``."""
        now = time.monotonic()
        for settling in list(self.settling):
            if settling.leftovers and now < settling.deadline:
                continue
            for pid in settling.leftovers:
                say(
                    f"process {pid} outlived virtiofsd {settling.daemon.pid} (killed)",
                    logging.WARNING,
                )
            self._outlived |= settling.leftovers
            self.settling.remove(settling)
            share, daemon = settling.share, settling.daemon
            self._exited(share, daemon, settling.code, settling.signal, known=True)

    def _timeout(self) -> float:
        """How long the loop may sleep: until the first settling deadline, if any."""
        if not self.settling:
            return _SAFETY_S
        return max(0.0, min(s.deadline for s in self.settling) - time.monotonic())

    def _adopted_gone(self, name: str) -> None:
        share = self.shares.get(name)
        if share is None or share.daemon is None or share.daemon.pidfd is None:
            return
        self._exited(share, share.daemon, None, None, known=False)

    def _exited(
        self, share: Share, daemon: Daemon, code: int | None, sig: str | None, *, known: bool
    ) -> None:
        self._close_pidfd(daemon)
        gone = p.Exited(share.name, daemon.generation, daemon.pid, code, sig, time.time(), known)
        if share.daemon is daemon:
            share.daemon = None
        self.exits.append(gone)
        how = sig or (f"status {code}" if known else "status unknown")
        say(f"virtiofsd {daemon.pid} of {share.name} (generation {daemon.generation}) ended: {how}")
        self._save()
        self._send(gone)

    def _close_pidfd(self, daemon: Daemon) -> None:
        if daemon.pidfd is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(daemon.pidfd)
            os.close(daemon.pidfd)
            daemon.pidfd = None

    # --- the brain ------------------------------------------------------------------

    def _accept(self) -> None:
        assert self.control is not None  # noqa: S101 - bound before the loop
        try:
            conn, _ = self.control.accept()
        except BlockingIOError:
            return
        p.configure(conn)
        pid, uid, _gid = peer(conn)
        refusal = None
        if uid not in (0, os.getuid()):
            refusal = f"uid {uid} is not served here"
        elif self.brain is not None:
            other, _, _ = peer(self.brain)
            refusal = f"busy: brain pid {other} is connected"
        if refusal is not None:
            with contextlib.suppress(OSError):
                p.send(conn, p.Failed(0, refusal))
            conn.close()
            say(f"refused a connection from pid {pid}: {refusal}", logging.WARNING)
            return
        conn.setblocking(True)
        conn.settimeout(5.0)  # a brain that stops reading must not hold the holder
        self.brain = conn
        self.selector.register(conn, selectors.EVENT_READ, ("brain", ""))
        say(f"brain pid {pid} connected")

    def _drop_brain(self) -> None:
        if self.brain is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(self.brain)
            self.brain.close()
            self.brain = None
            say("brain went away; the daemons keep serving")

    def _from_brain(self) -> None:
        assert self.brain is not None  # noqa: S101 - registered only while connected
        try:
            received = p.receive(self.brain, self.buffer)
        except p.ProtocolError as exc:
            self._send(p.Failed(exc.id or 0, str(exc)))
            return
        except OSError:
            self._drop_brain()
            return
        if received is None:
            self._drop_brain()
            return
        data, fds = received
        message: p.Request | None = None
        try:
            decoded = p.decode(data)
            if not isinstance(decoded, p.REQUESTS):
                raise p.ProtocolError(f"{decoded.OP} is not a request", getattr(decoded, "id", 0))
            message = decoded
            reply, out = self._handle(message, fds)
        except p.ProtocolError as exc:
            reply, out = p.Failed(exc.id or 0, str(exc)), []
        except Refused as exc:
            reply, out = p.Failed(message.id if message is not None else 0, str(exc)), []
        except Exception as exc:  # a bug handling one request must not stop the data path
            say(f"error handling a request: {type(exc).__name__}: {exc}", logging.WARNING)
            reply, out = p.Failed(p.peek_id(data) or 0, f"{type(exc).__name__}: {exc}"), []
        finally:
            for fd in fds:  # descriptors a request brought are ours only as dups
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._send(reply, out)
        if isinstance(reply, p.Done) and isinstance(message, p.Shutdown | p.Reexec):
            if isinstance(message, p.Shutdown):
                self.stopping = True
            else:
                self._reexec()

    def _send(self, message: p.Reply | p.Exited, fds: Sequence[int] = ()) -> None:
        """A reply or a notice to the brain, if one is connected; a broken one is dropped."""
        if self.brain is None:
            return
        try:
            p.send(self.brain, message, fds)
        except OSError:
            self._drop_brain()

    # --- requests ---------------------------------------------------------------------

    def _handle(self, m: p.Request, fds: list[int]) -> tuple[p.Reply, list[int]]:
        match m:
            case p.Hello():
                if m.protocol != p.PROTOCOL:
                    raise Refused(f"protocol {m.protocol} asked, this holder speaks {p.PROTOCOL}")
                return self._hello(m)
            case p.Listen():
                return self._listen(m, fds)
            case p.Spawn():
                return self._spawn(m), []
            case p.Signal():
                daemon = self._running(m.share, m.generation)
                os.kill(daemon.pid, m.signum)
                return p.Done(m.id), []
            case p.Ack():
                self.exits = [
                    e for e in self.exits if (e.share, e.generation) != (m.share, m.generation)
                ]
                self._save()
                return p.Done(m.id), []
            case p.Release():
                self._release(m.share)
                self._save()
                return p.Done(m.id), []
            case p.Shutdown() | p.Reexec():
                return p.Done(m.id), []
        raise Refused(f"{m.OP} is not handled")  # pragma: no cover - exhaustive above

    def _hello(self, m: p.Hello) -> tuple[p.Reply, list[int]]:
        shares = tuple(s.state() for s in self.shares.values())
        state = p.HolderState(
            os.getpid(), p.PROTOCOL, self.started_at, self.reexecs, shares, tuple(self.exits)
        )
        fds = [s.listener.fileno() for s in self.shares.values() if s.listener is not None]
        return p.StateReply(m.id, state), fds

    def _listen(self, m: p.Listen, fds: list[int]) -> tuple[p.Reply, list[int]]:
        share = self.shares.get(m.share)
        if share is None:
            if len(self.shares) >= p.MAX_SHARES:
                raise Refused(f"at most {p.MAX_SHARES} shares")
            share = self.shares[m.share] = Share(m.share, m.path)
        if share.socket != m.path and share.listener is not None:
            self._close_listener(share)
        share.socket = m.path
        if share.listener is None or not bound_to(share.listener, share, on_disk=True):
            if share.listener is not None:
                share.listener.close()
                share.listener = None
            given = [socket.socket(fileno=os.dup(fd)) for fd in fds[:1]]
            if given and bound_to(given[0], share):
                share.listener = given[0]
                say(f"listener of {m.share} given back by the brain")
            else:
                for sock in given:
                    sock.close()
                share.listener = bind(m.path, m.backlog)
                say(f"listening on {m.path} for {m.share}")
            share.inode = file_inode(m.path)
            self.notifier.store_fds(m.share, [share.listener.fileno()])
        if share.inode is None:
            share.inode = file_inode(m.path)
        self._save()
        return p.Listening(m.id, m.share, share.inode or 0), [share.listener.fileno()]

    def _spawn(self, m: p.Spawn) -> p.Spawned:
        share = self.shares.get(m.share)
        if share is None or share.listener is None:
            raise Refused(f"share {m.share} has no listener (listen first)")
        if share.daemon is not None:
            raise Refused(f"virtiofsd {share.daemon.pid} of {m.share} still runs")
        if m.generation <= share.generation:
            raise Refused(f"generation {m.generation} is not above {share.generation}")
        path = self.stderr / f"{m.share}.{m.generation}.log"
        try:
            self.stderr.mkdir(mode=0o700, exist_ok=True)
            err = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:  # its stderr is not worth an unserved share
            say(f"stderr of {m.share} goes nowhere: {path}: {exc.strerror}", logging.WARNING)
            err = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
            path = Path(os.devnull)
        listener = os.dup(share.listener.fileno())
        os.set_inheritable(listener, True)  # the one descriptor virtiofsd inherits
        try:
            argv = [a.replace("{fd}", str(listener)) for a in m.argv]
            env = dict(os.environ) | dict(m.env or ())
            actions = [
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, err, 1),
                (os.POSIX_SPAWN_DUP2, err, 2),
            ]
            pid = os.posix_spawn(
                argv[0],
                argv,
                env,
                file_actions=actions,
                setsid=True,  # a hang-up or ^C in the user's shell never reaches it
                setsigmask=(),
                setsigdef=_HANDLED,  # the holder's handlers must not leak into virtiofsd
            )
        except OSError as exc:
            if path != Path(os.devnull):
                with contextlib.suppress(OSError):
                    path.unlink()
            raise Refused(f"cannot run {m.argv[0]}: {exc.strerror or exc}") from exc
        finally:
            os.close(listener)
            os.close(err)
        started = time.time()
        share.generation = m.generation
        share.daemon = Daemon(m.generation, pid, started, start_time(pid), m.argv)
        self._save()
        say(f"started virtiofsd {pid} for {m.share} (generation {m.generation})")
        return p.Spawned(m.id, m.share, m.generation, pid, started, str(path))

    def _running(self, name: str, generation: int) -> Daemon:
        share = self.shares.get(name)
        if share is None or share.daemon is None or share.daemon.generation != generation:
            raise Refused(f"generation {generation} of {name} is not running")
        return share.daemon

    # --- stopping ------------------------------------------------------------------------

    def _release(self, name: str) -> None:
        share = self.shares.pop(name, None)
        if share is None:
            return
        for settling in [s for s in self.settling if s.share is share]:
            self.settling.remove(settling)  # its daemon is gone, its leftovers killed
            share.daemon = None
        if share.daemon is not None:
            _stop(share.daemon)
            self._close_pidfd(share.daemon)
        self._close_listener(share)
        self.exits = [e for e in self.exits if e.share != name]
        for old in self.stderr.glob(f"{name}.*.log"):
            with contextlib.suppress(OSError):
                old.unlink()
        say(f"released {name}")

    def _close_listener(self, share: Share) -> None:
        if share.listener is None:
            return
        with contextlib.suppress(OSError):
            if share.inode is not None and os.lstat(share.socket).st_ino == share.inode:
                Path(share.socket).unlink()  # only our own socket file
        share.listener.close()
        share.listener = None
        self.notifier.remove_fds(share.name)

    def _shutdown(self) -> None:
        self.notifier.stopping("stopping every share")
        for name in list(self.shares):
            self._release(name)
        self.store.remove()
        with contextlib.suppress(OSError):
            (self.directory / "holder.sock").unlink()
        say("stopped")

    def _reexec(self) -> None:
        """Become a fresh holder image with the same pid: children and sockets stay."""
        shares: dict[str, Any] = {}
        for share in self.shares.values():
            listener = share.listener.fileno() if share.listener is not None else None
            if listener is not None:
                os.set_inheritable(listener, True)
            d = share.daemon
            daemon = None if d is None else d.fields() | {"child": d.child}
            shares[share.name] = share.fields() | {"listener": listener, "daemon": daemon}
        carried: dict[str, Any] = {
            "reexecs": self.reexecs + 1,
            "started_at": self.started_at,
            "exits": [e.fields() for e in self.exits],
            "shares": shares,
        }
        if self.control is not None:
            os.set_inheritable(self.control.fileno(), True)
            carried["control"] = self.control.fileno()
        memfd = os.memfd_create("healer-holder-state", 0)  # inheritable: no MFD_CLOEXEC
        os.write(memfd, orjson.dumps(carried))
        self._drop_brain()
        say("replacing the holder image (same pid)")
        os.set_inheritable(self.lock, True)
        argv = [sys.executable, "-m", "healer.holder", "--dir", str(self.directory)]
        argv += ["--inherit", str(memfd), "--lock", str(self.lock)]
        os.execv(sys.executable, argv)  # noqa: S606 - this very program, no shell

    def _from_reexec(self, carried: dict[str, Any]) -> None:
        """The state the image before this one wrote (trusted: it is this program)."""
        self.reexecs = int(carried["reexecs"])
        self.started_at = float(carried["started_at"])
        self.exits = [p.Exited.from_fields(raw) for raw in carried["exits"]]
        if carried.get("control") is not None:
            self.control = socket.socket(fileno=int(carried["control"]))
            os.set_inheritable(self.control.fileno(), False)
        for name, raw in carried["shares"].items():
            share = Share.from_fields(name, raw)
            if raw["listener"] is not None:
                share.listener = socket.socket(fileno=raw["listener"])
                os.set_inheritable(raw["listener"], False)
            daemon = share.daemon
            if daemon is not None and not daemon.child and not self._adopt(share, daemon):
                share.daemon = None
            self.shares[name] = share

    def _save(self) -> None:
        self.store.save(self.shares, self.exits)

    def _status(self) -> str:
        running = sum(1 for s in self.shares.values() if s.daemon is not None)
        return f"holding {len(self.shares)} socket(s), {running} virtiofsd running"


def _stop(daemon: Daemon, grace_s: float = p.STOP_GRACE_S) -> None:
    """SIGTERM the daemon's process group, SIGKILL after ``grace_s``; reap a child."""
    for number, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, p.KILL_WAIT_S)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(daemon.pid, number)
        with contextlib.suppress(ProcessLookupError):
            os.kill(daemon.pid, number)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if daemon.child:
                try:
                    done, _ = os.waitpid(daemon.pid, os.WNOHANG)
                except ChildProcessError:
                    return
                if done:
                    return
            elif start_time(daemon.pid) != daemon.starttime:
                return
            time.sleep(0.02)
