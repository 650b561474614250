"""A QMP client: QEMU's JSON monitor protocol on its Unix socket.

QEMU greets with ``{"QMP": {"version": ..., "capabilities": [...]}}`` and accepts
commands only after ``qmp_capabilities``. Every command goes out with an ``id`` that
QEMU copies into its answer: ``{"return": ...}`` or ``{"error": {"class", "desc"}}``.
Events (``{"event": NAME, "data": ..., "timestamp": ...}``) arrive at any time, also
between a command and its answer; they are kept in a bounded queue (the oldest are
dropped and counted) and :meth:`QmpClient.wait_event` finds them by name and
predicate, from a mark taken before the command that causes them.

One thread uses a client at a time; nothing runs in the background. Every read has
a deadline, so a silent QEMU costs a :class:`QmpTimeout`, never a hang.
"""

from __future__ import annotations

import itertools
import math
import socket
import stat
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from healer.errors import HealerError
from healer.unixsock import connect_unix

__all__ = [
    "QmpClient",
    "QmpClosed",
    "QmpCommandError",
    "QmpError",
    "QmpEvent",
    "QmpTimeout",
    "QmpUnreachable",
]

_MAX_MESSAGE = 1 << 22  # query-qmp-schema is the largest answer, about 200 KiB


class QmpError(HealerError):
    """Base of every error talking to QEMU's monitor."""


class QmpUnreachable(QmpError):
    """Nobody answers on the QMP socket: missing, refused, or not a socket."""

    def __init__(self, path: str, reason: str, *, errno: int | None = None) -> None:
        self.path = path
        self.reason = reason
        self.errno = errno
        super().__init__(f"QEMU monitor at {path} is unreachable: {reason}")


class QmpClosed(QmpError):
    """QEMU closed the monitor connection (it exited, or another client took it)."""

    def __init__(self, path: str, waiting_for: str) -> None:
        self.path = path
        self.waiting_for = waiting_for
        super().__init__(f"QEMU monitor at {path} closed while waiting for {waiting_for}")


class QmpTimeout(QmpError):
    """No answer (or no event) within the timeout."""

    def __init__(self, path: str, what: str, timeout_s: float) -> None:
        self.path = path
        self.what = what
        self.timeout_s = timeout_s
        super().__init__(f"{what} on {path}: nothing within {timeout_s:g} s")


class QmpCommandError(QmpError):
    """QEMU answered a command with an error; ``error_class`` is QEMU's class name."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        self.command = command
        self.error_class = error_class
        self.desc = desc
        super().__init__(f"{command} failed: {error_class}: {desc}")


@dataclass(frozen=True, slots=True)
class QmpEvent:
    """One asynchronous event; ``seq`` counts events on this connection from 1."""

    seq: int
    name: str
    data: dict[str, Any] = field(default_factory=dict)
    timestamp: float | None = None  # QEMU's wall clock, seconds


class QmpClient:
    """Connect, negotiate, run commands, wait for events; see the module docstring."""

    def __init__(self, path: str, *, timeout_s: float = 5.0, max_events: int = 256) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.events: deque[QmpEvent] = deque(maxlen=max_events)
        self.dropped_events = 0
        self.malformed_events = 0
        self.greeting: dict[str, Any] = {}
        self._sock: socket.socket | None = None
        self._buffer = bytearray()
        self._ids = itertools.count(1)
        self._seq = 0

    # --- connection ---------------------------------------------------------------

    def connect(self) -> dict[str, Any]:
        """Connect, read the greeting, send ``qmp_capabilities``; returns QEMU's version."""
        self.close()
        try:
            mode = Path(self.path).stat().st_mode
        except FileNotFoundError as exc:
            raise QmpUnreachable(self.path, "no such socket", errno=exc.errno) from exc
        if not stat.S_ISSOCK(mode):
            raise QmpUnreachable(self.path, "not a socket")
        try:
            sock = connect_unix(self.path, self.timeout_s)
        except OSError as exc:
            raise QmpUnreachable(self.path, exc.strerror or str(exc), errno=exc.errno) from exc
        self._sock = sock
        self._buffer.clear()
        try:
            greeting = self._read(time.monotonic() + self.timeout_s, "the greeting")
            if "QMP" not in greeting:
                raise QmpUnreachable(self.path, "the peer does not speak QMP")
            self.greeting = greeting["QMP"]
            self.execute("qmp_capabilities")
        except QmpError:
            self.close()
            raise
        version = self.greeting.get("version", {})
        return version if isinstance(version, dict) else {}

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> QmpClient:
        if self._sock is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- commands and events ------------------------------------------------------

    def execute(
        self,
        command: str,
        arguments: dict[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> Any:
        """Run one command; returns its ``return`` value or raises QmpCommandError."""
        if self._sock is None:
            self.connect()
        assert self._sock is not None  # noqa: S101 - connect() set it or raised
        ident = f"healer-{next(self._ids)}"
        message: dict[str, Any] = {"execute": command, "id": ident}
        if arguments is not None:
            message["arguments"] = arguments
        limit = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        try:
            self._sock.sendall(orjson.dumps(message) + b"\n")
        except OSError as exc:
            self.close()
            raise QmpClosed(self.path, command) from exc
        while True:
            answer = self._read(deadline, command, limit)
            if answer.get("id") != ident:
                continue  # an answer to a command we gave up on
            if "error" in answer:
                error = answer["error"] if isinstance(answer["error"], dict) else {}
                raise QmpCommandError(
                    command, str(error.get("class", "?")), str(error.get("desc", ""))
                )
            return answer.get("return")

    def mark(self) -> int:
        """The sequence number of the last event seen: wait for events after it."""
        return self._seq

    def wait_event(
        self,
        name: str,
        predicate: Callable[[QmpEvent], bool] | None = None,
        *,
        timeout_s: float,
        since: int = 0,
    ) -> QmpEvent:
        """The first event ``name`` after ``since`` that ``predicate`` accepts."""
        deadline = time.monotonic() + timeout_s

        def match(event: QmpEvent) -> bool:
            return (
                event.seq > since and event.name == name and (predicate is None or predicate(event))
            )

        for event in self.events:
            if match(event):
                return event
        while True:
            self._read(deadline, f"event {name}", timeout_s, events_only=True)
            if match(self.events[-1]):
                return self.events[-1]

    # --- the wire -----------------------------------------------------------------

    def _read(
        self, deadline: float, what: str, limit: float | None = None, *, events_only: bool = False
    ) -> dict[str, Any]:
        """The next non-event message (or, ``events_only``, the next event)."""
        while True:
            line = self._line(deadline, what, self.timeout_s if limit is None else limit)
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # not ours to fix; QEMU never sends broken JSON
            if not isinstance(message, dict):
                continue
            if "event" in message:
                self._event(message)
                if events_only:
                    return message
                continue
            if not events_only:
                return message

    def _event(self, message: dict[str, Any]) -> None:
        """Keep one event; a name that is not a string is not an event QEMU sends, and a
        timestamp that is not two numbers is read as none (never an exception)."""
        name = message["event"]
        if not isinstance(name, str):
            self.malformed_events += 1
            return
        self._seq += 1
        data = message.get("data")
        if len(self.events) == self.events.maxlen:
            self.dropped_events += 1
        self.events.append(
            QmpEvent(self._seq, name, data if isinstance(data, dict) else {}, _event_time(message))
        )

    def _line(self, deadline: float, what: str, limit: float) -> bytes:
        while True:
            end = self._buffer.find(b"\n")
            if end >= 0:
                line = bytes(self._buffer[:end])
                del self._buffer[: end + 1]
                return line
            if len(self._buffer) > _MAX_MESSAGE:
                self.close()
                raise QmpClosed(self.path, f"{what} (a message over {_MAX_MESSAGE} bytes)")
            left = deadline - time.monotonic()
            if left <= 0 or self._sock is None:
                if self._sock is None:
                    raise QmpClosed(self.path, what)
                raise QmpTimeout(self.path, what, limit)
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                continue
            except OSError as exc:
                self.close()
                raise QmpClosed(self.path, what) from exc
            if not chunk:
                self.close()
                raise QmpClosed(self.path, what)
            self._buffer += chunk


def _event_time(message: dict[str, Any]) -> float | None:
    """QEMU's ``{"seconds": s, "microseconds": us}``, or None when it is not that."""
    stamp = message.get("timestamp")
    if not isinstance(stamp, dict):
        return None
    seconds, micros = stamp.get("seconds", 0), stamp.get("microseconds", 0)
    for part in (seconds, micros):
        if isinstance(part, bool) or not isinstance(part, int | float):
            return None
    try:
        when = float(seconds) + float(micros) / 1e6
    except OverflowError:
        return None
    return when if math.isfinite(when) else None
