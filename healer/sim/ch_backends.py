"""The stand-in's fs devices as vhost-user front ends: CH's connect loop and reconnects.

Each fs device is a real :class:`VhostUserFrontend` for a real virtiofsd. It connects
with CH's loop (retry every interval until the window runs out, 100 ms and 60 s by
default), keeps the connection, and its worker thread reconnects when the backend
hangs up (CH v16+). What the VMM does when a device cannot connect (a failed hot-plug,
a device that needs a reset, an exit) stays with :class:`ChStandIn`.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay
from tenacity.wait import wait_fixed

from healer.sim.ch_log import ChLog
from healer.sim.vhost_user import VhostUserError, VhostUserFrontend
from healer.vmm.chformat import FsConfig, io_error_debug

__all__ = ["BackendStats", "Backends", "FsDevice"]

_POLL_FLAGS = select.POLLIN | select.POLLPRI | getattr(select, "POLLRDHUP", 0x2000)


@dataclass(frozen=True, slots=True)
class BackendStats:
    """Counts over all fs devices: what the vhost-user side saw, for assertions."""

    connects: int = 0
    refused: int = 0
    not_found: int = 0
    failed_handshakes: int = 0
    disconnects: int = 0
    timeouts: int = 0


class _HandshakeFailed(Exception):
    pass


class _Cancelled(Exception):
    pass


class FsDevice:
    """One hot-plugged fs device; its worker thread alone owns the connection."""

    def __init__(self, config: FsConfig, bdf: str, conn: VhostUserFrontend) -> None:
        self.config = config
        self.bdf = bdf
        self.conn = conn
        self.kill = threading.Event()
        self.state = "active"
        self.eject_at: float | None = None
        self.thread: threading.Thread | None = None

    @property
    def id(self) -> str:
        return self.config.device_id or ""


@dataclass(eq=False)
class Backends:
    """The VMM's side of every fs device's socket: connects, reconnects, and counts.

    The settings are :class:`~healer.sim.cloud_hypervisor.ChStandIn`'s, passed on.
    """

    log: ChLog
    version: int
    _: KW_ONLY
    connect_timeout_s: float
    retry_interval_s: float
    handshake_timeout_s: float
    tick_s: float
    _counts: dict[str, int] = field(
        init=False, default_factory=lambda: dict.fromkeys(BackendStats.__slots__, 0)
    )
    _count_lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    @property
    def stats(self) -> BackendStats:
        with self._count_lock:
            return BackendStats(**self._counts)

    def _count(self, name: str) -> None:
        with self._count_lock:
            self._counts[name] += 1

    def connect(self, path: str, thread: str, cancel: threading.Event) -> VhostUserFrontend | None:
        """CH's connect loop: retry every interval until the window runs out."""

        def once() -> VhostUserFrontend:
            try:
                front = VhostUserFrontend(path, timeout_s=self.handshake_timeout_s)
            except ConnectionRefusedError:
                self._count("refused")
                raise
            except FileNotFoundError:
                self._count("not_found")
                raise
            try:
                front.handshake()
            except (VhostUserError, OSError) as exc:
                front.close()
                self._count("failed_handshakes")
                raise _HandshakeFailed(repr(exc)) from exc
            self._count("connects")
            return front

        def pause(seconds: float) -> None:
            if cancel.wait(seconds):
                raise _Cancelled

        attempts = int(self.connect_timeout_s / self.retry_interval_s) + 2
        retrying = Retrying(
            stop=stop_after_attempt(attempts) | stop_after_delay(self.connect_timeout_s),
            wait=wait_fixed(self.retry_interval_s),
            retry=retry_if_exception_type((OSError, _HandshakeFailed)),
            sleep=pause,
            reraise=True,
        )
        try:
            return retrying(once)
        except _Cancelled:
            return None
        except (OSError, _HandshakeFailed) as exc:
            self._count("timeouts")
            error = io_error_debug(exc)
            where = f" for socket {path}" if self.version >= 52 else ""
            text = f"Failed connecting the backend after trying for 1 minute{where}: {error}"
            self.log.write("ERROR", thread, "timeout", text)
            return None

    def watch(self, device: FsDevice, failed: Callable[[FsDevice], None]) -> None:
        """The device's epoll worker: notice a hang-up, reconnect (CH v16+).

        ``failed`` is the VMM's answer to a reconnect window that ran out.
        """
        conn: VhostUserFrontend | None = device.conn
        try:
            while conn is not None and not device.kill.is_set():
                if not _hung_up(conn, self.tick_s):
                    continue
                conn.close()
                conn = None
                self._count("disconnects")
                if self.version < 16:  # no reconnection before v16: the device is dead
                    device.state = "dead"
                    break
                if self.version >= 52:
                    text = f"vhost-user backend for socket {device.config.socket} disconnected"
                    self.log.write(
                        "INFO", device.id, "disconnected", f"{text}, attempting reconnection"
                    )
                conn = self.connect(device.config.socket, device.id, device.kill)
                if conn is None and not device.kill.is_set():
                    failed(device)
        finally:
            if conn is not None:
                conn.close()


def _hung_up(conn: VhostUserFrontend, timeout_s: float) -> bool:
    """Whether the backend closed its end (EOF, HUP or an error) within the wait."""
    poller = select.poll()
    poller.register(conn.sock, _POLL_FLAGS)
    if not poller.poll(int(timeout_s * 1000)):
        return False
    try:
        data = conn.sock.recv(4096, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return not data  # a backend sends nothing unasked; data here is ignored
