"""The service manager's protocols: sd_notify, the file-descriptor store, socket passing
and the watchdog, spoken directly.

healer runs under systemd as ``Type=notify`` and keeps its listening sockets in systemd's
file-descriptor store, so that a client connecting while healer restarts is queued on the
held socket instead of refused. No library is used, on purpose: the bindings that speak
this (python-systemd) need libsystemd and a C build, the pure-Python ones on PyPI cannot
pass file descriptors, and the protocols themselves are small and stable (a datagram of
``KEY=VALUE`` lines on an AF_UNIX socket, file descriptors as SCM_RIGHTS, and a few
environment variables), which ``socket.sendmsg`` speaks in a few lines. See sd_notify(3),
sd_listen_fds(3), sd_watchdog_enabled(3) and https://systemd.io/FILE_DESCRIPTOR_STORE.

Nothing here raises into the caller: a notification that cannot be sent is logged at debug
and counted, because the service must go on working when the manager is gone or slow.
"""

from __future__ import annotations

import array
import logging
import os
import socket
import threading
import time
from collections.abc import Mapping, Sequence

log = logging.getLogger(__name__)

LISTEN_FDS_START = 3
"""The first file descriptor systemd passes (SD_LISTEN_FDS_START)."""

STATUS_MAX_BYTES = 1024
"""A status text is cut to this many bytes: systemd reads at most one pipe buffer (4 KiB)."""

FDNAME_MAX = 255
"""systemd's limit on a file-descriptor name (FDNAME_MAX)."""

SCM_MAX_FD = 253
"""The kernel's limit on file descriptors in one SCM_RIGHTS message."""

UNNAMED = "unknown"
"""The name sd_listen_fds_with_names(3) gives to a descriptor passed without one."""

_LISTEN_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def _socket_address(value: str | None) -> str | None:
    """``NOTIFY_SOCKET`` as an AF_UNIX address: a path, or ``@name`` for the abstract namespace."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # vsock: and other transports of newer systemd are not for a host service like healer
    log.debug("NOTIFY_SOCKET %r is neither a path nor @abstract; not notifying", value)
    return None


def _clean(text: str, limit: int = STATUS_MAX_BYTES) -> str:
    """One line of printable text, at most ``limit`` bytes of UTF-8: a newline would start a
    new assignment in the datagram, so it must never reach it."""
    flat = "".join(" " if ord(ch) < 32 or ord(ch) == 127 else ch for ch in text)
    encoded = flat.encode("utf-8", "replace")
    if len(encoded) <= limit:
        return flat
    return encoded[:limit].decode("utf-8", "ignore")


def _fdname_error(name: str) -> str | None:
    """Why systemd would refuse ``name`` as FDNAME (printable ASCII, no colon, <= 255)."""
    if not name:
        return "empty"
    if len(name) > FDNAME_MAX:
        return f"longer than {FDNAME_MAX} characters"
    if any(ch == ":" or not 32 <= ord(ch) < 127 for ch in name):
        return "not printable ASCII without ':'"
    return None


class Notifier:
    """Sends sd_notify(3) messages to the service manager, or nothing when there is none.

    Each message is one datagram on a fresh socket with a send timeout, so a stuck manager
    cannot block the caller for longer than ``timeout`` and no socket is kept open across
    the fork of a child. ``failures`` counts the messages that could not be sent.
    """

    def __init__(self, address: str | None, *, timeout: float = 1.0) -> None:
        """``address`` is the ``NOTIFY_SOCKET`` value (a path or ``@name``), or None for none."""
        self._address = _socket_address(address)
        self.timeout = timeout
        self.failures = 0
        self._lock = threading.Lock()

    @classmethod
    def from_environ(
        cls, environ: Mapping[str, str] | None = None, *, timeout: float = 1.0
    ) -> Notifier:
        """The notifier systemd asked for through ``NOTIFY_SOCKET``; a no-op one without it."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"), timeout=timeout)

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens: False makes every method a no-op."""
        return self._address is not None

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) is complete: systemd starts the units ordered after us."""
        return self._send("READY=1", status)

    def status(self, text: str) -> bool:
        """A one-line status shown by ``systemctl status``."""
        return self._send(None, text)

    def watchdog(self) -> bool:
        """Alive: resets the ``WatchdogSec=`` timer (ping at half of `watchdog_interval`)."""
        return self._send("WATCHDOG=1")

    def reloading(self, status: str | None = None) -> bool:
        """A reload has begun; send `ready` when it is done.

        ``MONOTONIC_USEC`` is what ``Type=notify-reload`` (systemd >= 253) requires with
        RELOADING=1 to match the message to the reload; older systemd ignores it.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}", status)

    def stopping(self, status: str | None = None) -> bool:
        """The service is shutting down on its own: systemd does not take it for a crash."""
        return self._send("STOPPING=1", status)

    def mainpid(self, pid: int) -> bool:
        """Another process is now the service's main process (for example after a re-exec)."""
        if pid <= 0:
            return self._fail(f"MAINPID={pid}", "not a process id")
        return self._send(f"MAINPID={pid}")

    def store_fds(self, name: str, fds: Sequence[int], *, poll: bool = True) -> bool:
        """Keep ``fds`` in systemd's store under ``name``; a restarted service gets them back
        through `listen_fds`. ``poll=False`` keeps them even if they report an error or hang-up
        (systemd otherwise drops such a descriptor); the unit needs ``FileDescriptorStoreMax=``.
        """
        why = _fdname_error(name)
        if why is None and not fds:
            why = "no file descriptors"
        if why is None and len(fds) > SCM_MAX_FD:
            why = f"more than {SCM_MAX_FD} file descriptors"
        if why is None and any(fd < 0 for fd in fds):
            why = "a negative file descriptor"
        if why is not None:
            return self._fail(f"FDSTORE=1 FDNAME={name!r}", why)
        message = f"FDSTORE=1\nFDNAME={name}" + ("" if poll else "\nFDPOLL=0")
        return self._send(message, fds=fds)

    def remove_fds(self, name: str) -> bool:
        """Drop (and close in systemd) the descriptors stored under ``name``."""
        why = _fdname_error(name)
        if why is not None:
            return self._fail(f"FDSTOREREMOVE=1 FDNAME={name!r}", why)
        return self._send(f"FDSTOREREMOVE=1\nFDNAME={name}")

    def _send(
        self, message: str | None, status: str | None = None, fds: Sequence[int] = ()
    ) -> bool:
        """One datagram; True when the kernel took it (systemd may still ignore it)."""
        if self._address is None:
            return False
        lines = [] if message is None else [message]
        if status is not None:
            lines.append("STATUS=" + _clean(status))
        text = "\n".join(lines)
        ancillary = []
        if fds:
            ancillary.append((socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds)))
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.settimeout(self.timeout)
                sock.sendmsg([text.encode()], ancillary, 0, self._address)
        except (OSError, ValueError, OverflowError) as exc:
            return self._fail(text, repr(exc))
        return True

    def _fail(self, message: str, why: str) -> bool:
        """Counts and logs a notification that was not sent; never raises."""
        with self._lock:
            self.failures += 1
        log.debug("sd_notify %r not sent: %s", message.replace("\n", " "), why)
        return False


def watchdog_interval() -> float | None:
    """The ``WatchdogSec=`` of our unit in seconds, or None when no watchdog watches us.

    Like sd_watchdog_enabled(3): ``WATCHDOG_USEC`` counts, and ``WATCHDOG_PID``, when set,
    must be our pid (a child that inherited the variables is not watched). Ping at half.
    """
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if pid is not None:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    return usec / 1_000_000


def listen_fds(*, unset_environment: bool = True) -> dict[str, list[int]]:
    """The file descriptors systemd passed us (socket units and the fd store), by name.

    Like sd_listen_fds_with_names(3): only when ``LISTEN_PID`` is our pid, ``LISTEN_FDS``
    descriptors from fd 3 on, named by ``LISTEN_FDNAMES`` (colon-separated; unnamed ones
    under "unknown"). Each is made close-on-exec so that healer's children do not inherit
    them. The variables are removed (when asked) in every case, as systemd's own code does,
    so that a child is not misled into taking our descriptors.
    """
    try:
        return _listen_fds(
            os.environ.get("LISTEN_PID"),
            os.environ.get("LISTEN_FDS"),
            os.environ.get("LISTEN_FDNAMES"),
        )
    finally:
        if unset_environment:
            for name in _LISTEN_VARIABLES:
                os.environ.pop(name, None)


def _listen_fds(pid: str | None, count: str | None, names: str | None) -> dict[str, list[int]]:
    """The parsing of `listen_fds`, on the three variables' values."""
    try:
        if pid is None or int(pid) != os.getpid() or count is None:
            return {}
        n = int(count)
    except ValueError:
        log.debug("LISTEN_PID=%r LISTEN_FDS=%r are not numbers; ignored", pid, count)
        return {}
    given = [] if names is None else names.split(":")
    if names is not None and len(given) != n:
        log.debug("LISTEN_FDNAMES names %d descriptors, LISTEN_FDS says %d", len(given), n)
    passed: dict[str, list[int]] = {}
    for i in range(max(n, 0)):
        fd = LISTEN_FDS_START + i
        try:
            os.set_inheritable(fd, False)
        except OSError as exc:
            log.debug("passed fd %d is not open (%s); skipped", fd, exc)
            continue
        name = given[i] if i < len(given) and given[i] else UNNAMED
        passed.setdefault(name, []).append(fd)
    return passed


def under_systemd() -> bool:
    """Whether systemd started us (as a service: ``INVOCATION_ID`` or ``NOTIFY_SOCKET``)."""
    return bool(os.environ.get("INVOCATION_ID") or os.environ.get("NOTIFY_SOCKET"))
