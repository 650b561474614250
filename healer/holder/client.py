"""The brain's side of the holder's control socket.

:meth:`HolderClient.connect` finds the holder of a directory, or starts one (in a
session of its own, not a child that dies with the brain) when none runs, and says
hello: the answer is everything the holder keeps, with the listening sockets, of which
the brain holds copies (a new holder gets them back if the old one ever dies). Requests
are thread-safe and bounded in time; one reader thread matches replies to requests and
hands the holder's exit notices to ``on_exit`` in order. When the connection breaks,
``on_lost`` is called once.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from healer.errors import HealerError
from healer.holder import protocol as p
from healer.unixsock import connect_path

__all__ = ["HolderClient", "HolderError"]

_REPLIES = (p.Done, p.Failed, p.Listening, p.Spawned, p.StateReply)
REQUEST_TIMEOUT_S = 10.0  # a stop of a daemon takes up to STOP_GRACE_S + KILL_WAIT_S


class HolderError(HealerError):
    """The holder could not be reached, or refused or failed a request."""


class _Pending:
    __slots__ = ("done", "fds", "reply")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.reply: p.Reply | None = None
        self.fds: list[int] = []


class HolderClient:
    """One connection to a holder; see the module docstring."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        on_exit: Callable[[p.Exited], None],
        on_lost: Callable[[], None],
    ) -> None:
        self.sock = sock
        self.on_exit = on_exit
        self.on_lost = on_lost
        self.listeners: dict[str, socket.socket] = {}
        self.state = p.HolderState(0, p.PROTOCOL, 0.0, 0, (), ())
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._closed = False
        self._refused: str | None = None  # the holder turned this connection away
        self._gone = threading.Event()  # the connection has ended
        self._reader = threading.Thread(target=self._read, name="holder", daemon=True)

    # --- connecting -----------------------------------------------------------------

    @classmethod
    def connect(
        cls,
        directory: Path,
        *,
        start: bool = True,
        timeout_s: float = 5.0,
        on_exit: Callable[[p.Exited], None],
        on_lost: Callable[[], None],
    ) -> HolderClient:
        """The holder of ``directory`` (started if none runs and ``start``), greeted."""
        path = directory / "holder.sock"
        started = False
        deadline = time.monotonic() + timeout_s
        while True:
            sock = _try_connect(path)
            if sock is not None:
                client = cls(sock, on_exit=on_exit, on_lost=lambda: None)
                client._reader.start()
                try:
                    client._hello()
                except HolderError:
                    # A holder that is going away (or replacing its image) dropped us
                    # between connect and hello; a refusal is final, a drop is retried.
                    client.close()
                    if client._refused or time.monotonic() > deadline:
                        raise
                    time.sleep(0.01)
                    continue
                client.on_lost = on_lost
                if client._gone.is_set():
                    on_lost()
                return client
            if start and not started:
                _start(directory)
                started = True
            if time.monotonic() > deadline or (not start and not path.exists()):
                raise HolderError(f"no holder answers at {path} (see {directory / 'holder.log'})")
            time.sleep(0.01)

    def _hello(self) -> None:
        reply, fds = self._request(p.Hello(self._id(), p.PROTOCOL, os.getpid()))
        if not isinstance(reply, p.StateReply):
            raise HolderError(f"unexpected answer to hello: {reply.OP}")
        self.state = reply.state
        with_listener = [s for s in self.state.shares if s.has_listener]
        for share, fd in zip(with_listener, fds, strict=False):
            self._keep(share.name, socket.socket(fileno=fd))
        for fd in fds[len(with_listener) :]:
            os.close(fd)

    # --- requests --------------------------------------------------------------------

    def listen(
        self, share: str, path: str, *, backlog: int = 64, fd: socket.socket | None = None
    ) -> int:
        """Have the holder hold ``share``'s listener at ``path``; its file's inode.

        ``fd``: the brain's copy, for a holder that lost its own (it was restarted)."""
        given = fd or self.listeners.get(share)
        fds = [given.fileno()] if given is not None else []
        reply, got = self._request(p.Listen(self._id(), share, path, backlog), fds)
        if not isinstance(reply, p.Listening):
            raise HolderError(f"unexpected answer to listen: {reply.OP}")
        if got:
            self._keep(share, socket.socket(fileno=got[0]))
            for extra in got[1:]:
                os.close(extra)
        return reply.inode

    def spawn(
        self,
        share: str,
        generation: int,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
    ) -> p.Spawned:
        """Start that generation of the share's daemon (``{fd}``: the listener's number)."""
        pairs = tuple(sorted(env.items())) if env else None
        reply, _ = self._request(p.Spawn(self._id(), share, generation, tuple(argv), pairs))
        if not isinstance(reply, p.Spawned):
            raise HolderError(f"unexpected answer to spawn: {reply.OP}")
        return reply

    def signal(self, share: str, generation: int, signum: int) -> None:
        self._done(p.Signal(self._id(), share, generation, signum))

    def ack(self, share: str, generation: int) -> None:
        """That generation's exit is journaled: the holder may forget it."""
        self._done(p.Ack(self._id(), share, generation))

    def release(self, share: str) -> None:
        """Stop the share's daemon, remove its socket, forget the share."""
        self._done(p.Release(self._id(), share))
        old = self.listeners.pop(share, None)
        if old is not None:
            old.close()

    def shutdown(self) -> None:
        """Stop every daemon and socket; the holder exits."""
        self._done(p.Shutdown(self._id()))

    def reexec(self) -> None:
        """The holder replaces its own image (an upgrade): same pid, children kept."""
        self._done(p.Reexec(self._id()))

    def close(self) -> None:
        """This brain goes away; the holder and the daemons stay."""
        self._closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for sock in self.listeners.values():
            sock.close()
        self.listeners.clear()

    # --- the wire ---------------------------------------------------------------------

    def _id(self) -> int:
        return next(self._ids)

    def _done(self, request: p.Request) -> None:
        reply, _ = self._request(request)
        if not isinstance(reply, p.Done):
            raise HolderError(f"unexpected answer to {request.OP}: {reply.OP}")

    def _request(self, request: p.Request, fds: Sequence[int] = ()) -> tuple[p.Reply, list[int]]:
        pending = _Pending()
        ident = request.id
        with self._lock:
            if self._closed:
                raise HolderError("the connection to the holder is closed")
            self._pending[ident] = pending
        try:
            with self._send_lock:
                p.send(self.sock, request, fds)
        except OSError as exc:
            with self._lock:
                self._pending.pop(ident, None)
            self._reader.join(1.0)  # a refusal may be on its way: say that instead
            why = self._refused or f"the holder is gone: {exc.strerror or exc}"
            raise HolderError(why) from exc
        if not pending.done.wait(REQUEST_TIMEOUT_S):
            with self._lock:
                self._pending.pop(ident, None)
            raise HolderError(f"the holder did not answer {request.OP} in {REQUEST_TIMEOUT_S} s")
        reply = pending.reply
        if reply is None:
            raise HolderError("the connection to the holder broke")
        if isinstance(reply, p.Failed):
            for fd in pending.fds:
                os.close(fd)
            raise HolderError(reply.error)
        return reply, pending.fds

    def _read(self) -> None:
        buffer = bytearray(p.MAX_MESSAGE)
        while True:
            try:
                received = p.receive(self.sock, buffer)
            except p.ProtocolError:
                continue
            except OSError:
                received = None
            if received is None:
                break
            data, fds = received
            try:
                message = p.decode(data)
            except p.ProtocolError:
                for fd in fds:
                    os.close(fd)
                continue
            if isinstance(message, p.Exited):
                self.on_exit(message)
                continue
            if not isinstance(message, _REPLIES):
                continue  # a request sent to us: not how this protocol goes
            ident = message.id
            with self._lock:
                pending = self._pending.pop(ident, None)
            if pending is None:  # an answer nobody waits for (a refusal with id 0)
                for fd in fds:
                    os.close(fd)
                if isinstance(message, p.Failed) and ident == 0:
                    self._refused = message.error
                    self._fail_all(message)
                continue
            pending.reply, pending.fds = message, fds
            pending.done.set()
        self._fail_all(None)
        self._gone.set()
        if not self._closed:
            self.on_lost()

    def _fail_all(self, refusal: p.Failed | None) -> None:
        with self._lock:
            waiting, self._pending = self._pending, {}
        for pending in waiting.values():
            pending.reply = refusal
            pending.done.set()

    def _keep(self, share: str, sock: socket.socket) -> None:
        old = self.listeners.pop(share, None)
        if old is not None:
            old.close()
        self.listeners[share] = sock


def _try_connect(path: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        connect_path(sock, str(path))
    except OSError as exc:
        sock.close()
        if exc.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN):
            return None
        raise HolderError(f"cannot reach the holder at {path}: {exc.strerror}") from exc
    p.configure(sock)
    return sock


def _start(directory: Path) -> None:
    """A holder in a session of its own: a hang-up, a ^C or our death do not reach it."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = (directory / "holder.log").open("ab")
    try:
        starter = subprocess.Popen(
            [sys.executable, "-m", "healer.holder", "--dir", str(directory), "--detach"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        log.close()
    starter.wait(timeout=30)  # it forks the holder and exits: no child of ours stays
