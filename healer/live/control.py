"""The control socket: `healer status` and the operator's commands, for a running healer.

A Unix socket ``control.sock`` in the journal directory (0700), itself 0600; a peer
is served only if the kernel says (``SO_PEERCRED``) it runs as healer's user or
root. One request per connection, one JSON object per line each way, at most
:data:`MAX_REQUEST` bytes in, served one at a time with a deadline per connection,
so a client that sends nothing holds the socket for :data:`CLIENT_S` at most.

The answer is made on the decision loop's thread (``on_loop``), the only one that
reads the engine's state and writes the journal; the server waits for it at most
:data:`ANSWER_S`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from healer.supervise.held import bind_private
from healer.unixsock import connect_path

__all__ = [
    "ANSWER_S",
    "CLIENT_S",
    "CONTROL_SOCKET",
    "MAX_REQUEST",
    "ControlServer",
    "ControlUnavailable",
    "Peer",
    "ask",
]

log = logging.getLogger("healer")

CONTROL_SOCKET = "control.sock"
MAX_REQUEST = 64 * 1024
CLIENT_S = 5.0
ANSWER_S = 10.0
_CRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


@dataclass(frozen=True, slots=True)
class Peer:
    """Who is on the other end, as the kernel says."""

    pid: int
    uid: int
    gid: int


Answer = Callable[[dict[str, Any], Peer], dict[str, Any]]
OnLoop = Callable[[Callable[[], dict[str, Any]]], "queue.SimpleQueue[dict[str, Any]]"]


class ControlUnavailable(Exception):
    """No healer answers on this journal's control socket."""


class ControlServer:
    """Serves the control socket on a thread of its own until :meth:`close`."""

    def __init__(self, path: Path, answer: Answer) -> None:
        self.path = path
        self.answer = answer
        self.refused = 0  # peers of another user
        self.served = 0
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # a stale one: the journal lock says no other healer runs
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            bind_private(sock, str(self.path))
            sock.listen(8)
        except OSError:
            sock.close()
            raise
        sock.settimeout(0.5)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="healer-control", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._sock is not None:
            self._sock.close()
            with contextlib.suppress(OSError):
                self.path.unlink()

    def _serve(self) -> None:
        assert self._sock is not None  # noqa: S101 - start() made it
        while not self._closing.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                try:
                    self._one(conn)
                except Exception as exc:  # a client's mistake never ends the server
                    log.warning("control: a request failed: %s", exc)

    def _one(self, conn: socket.socket) -> None:
        conn.settimeout(CLIENT_S)
        pid, uid, gid = _CRED.unpack(
            conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
        )
        peer = Peer(pid, uid, gid)
        request = _read_request(conn)  # read first: a client that sent gets its answer
        if uid not in (0, os.geteuid()):
            self.refused += 1
            _reply(conn, {"ok": False, "error": f"uid {uid} may not control this healer"})
            return
        if request is None:
            _reply(conn, {"ok": False, "error": "a request is one JSON object on one line"})
            return
        self.served += 1
        _reply(conn, self.answer(request, peer))


def _read_request(conn: socket.socket) -> dict[str, Any] | None:
    data = bytearray()
    while b"\n" not in data and len(data) <= MAX_REQUEST:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    line = bytes(data).split(b"\n", 1)[0]
    if len(line) > MAX_REQUEST:
        return None
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _reply(conn: socket.socket, answer: dict[str, Any]) -> None:
    conn.sendall(orjson.dumps(answer) + b"\n")


def ask(journal: str | Path, request: dict[str, Any], *, timeout_s: float = 15.0) -> dict[str, Any]:
    """One request to the healer running on ``journal``; :class:`ControlUnavailable`
    when none answers."""
    path = Path(journal) / CONTROL_SOCKET
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    try:
        try:
            connect_path(sock, str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ControlUnavailable(f"no healer runs with journal {journal}") from exc
        except PermissionError as exc:
            raise ControlUnavailable(f"{path}: {exc.strerror} (run as healer's user)") from exc
        sock.sendall(orjson.dumps(request) + b"\n")
        data = bytearray()
        while len(data) <= 16 * MAX_REQUEST:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
            if data.endswith(b"\n"):
                break
    except TimeoutError as exc:
        raise ControlUnavailable(
            f"the healer on {journal} did not answer in {timeout_s:g} s"
        ) from exc
    finally:
        sock.close()
    try:
        value = orjson.loads(bytes(data))
    except orjson.JSONDecodeError as exc:
        raise ControlUnavailable(f"the healer on {journal} gave no answer") from exc
    if not isinstance(value, dict):
        raise ControlUnavailable(f"the healer on {journal} gave no answer")
    return value


def wait_answer(replies: queue.SimpleQueue[dict[str, Any]]) -> dict[str, Any]:
    """The loop's answer, or a busy error after :data:`ANSWER_S`."""
    try:
        return replies.get(timeout=ANSWER_S)
    except queue.Empty:
        return {"ok": False, "error": f"healer's decision loop did not answer in {ANSWER_S:g} s"}
