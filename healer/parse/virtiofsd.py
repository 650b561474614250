"""virtiofsd, the Rust daemon (env_logger or syslog) and the C daemon from QEMU.

Rust: ``[2024-12-23T04:50:24Z INFO  virtiofsd] msg`` (level padded to 5), or
``virtiofsd[pid]: msg`` with ``--syslog``. C: ``func: msg`` at info level, with a
``[time] [ID: tid] `` prefix (or ``[ID: tid] `` under syslog) at debug level.
"""

from __future__ import annotations

import re
from collections import deque

from healer.events import (
    VirtiofsdChildTerminated,
    VirtiofsdClientConnected,
    VirtiofsdClientDisconnected,
    VirtiofsdDaemonFailed,
    VirtiofsdListening,
    VirtiofsdPanicked,
    VirtiofsdStartFailed,
)
from healer.eventtime import parse_iso
from healer.parse.patterns import Built, Pattern, error_fields, signal_name
from healer.parse.record import Record

__all__ = ["KEYWORDS", "PATTERNS", "PROGRAM", "match_c_debug", "match_env_logger"]

PROGRAM: str | None = "virtiofsd"
"""Who prints the messages below when the line itself does not say."""

# Literal needles for the prefilter (see cloud_hypervisor.KEYWORDS).
KEYWORDS = (
    "socket connection",
    "Client connected",
    "Client disconnected",
    "Waiting for daemon failed",
    "panicked at",
    "virtio_loop: Exit",
    "fv_panic: ",
    "does not exist",
    "vhost socket ",
    "failed to stat source",
    "Failed to start daemon",
    "Error creating pid file",
    "Error creating listener",
    "Error entering sandbox",
    "Failed to create directory",
    "Child process terminated",
    "setgroups() failed",
    "seccomp_init(): ",
    "MS_REC|MS_SLAVE): ",
    "apply the child capabilities",
)

_ENV_LOGGER = re.compile(
    r"\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (ERROR|WARN|INFO|DEBUG|TRACE)\s+([\w:]+)\] (.*)"
)
_C_DEBUG = re.compile(
    r"^\[(?:(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?)([+-]\d{4})?|\d+)\] \[ID: (\d+)\] (.*)"
    r"|^\[ID: (\d+)\] (.*)"
)


def match_env_logger(rec: Record) -> bool:
    """Read a Rust env_logger prefix (anywhere in the payload) into ``rec``."""
    m = _ENV_LOGGER.search(rec.payload)
    if m is None:
        return False
    stamp, level, target, msg = m.groups()
    if not rec.precise or not rec.zoned:  # its UTC stamp beats a zone-less header
        rec.wall, rec.precise, rec.zoned = parse_iso(stamp), True, True
    rec.level = level
    rec.location = target
    prefix = rec.payload[: m.start()].strip(" `-[]")
    rec.program = target.split("::", 1)[0]
    if prefix and " " not in prefix:
        rec.program = prefix  # a supervisor's program name in front of the line
    rec.message = msg.rstrip("` ")
    return True


def match_c_debug(rec: Record) -> bool:
    """Read the C daemon's debug prefix (``[time] [ID: tid]`` or ``[ID: tid]``)."""
    m = _C_DEBUG.match(rec.payload)
    if m is None:
        return False
    stamp, zone, tid, msg, tid2, msg2 = m.groups()
    if stamp and (not rec.precise or (zone and not rec.zoned)):
        rec.wall = parse_iso(stamp + (zone or ""))
        rec.precise = rec.wall is not None
        rec.zoned = bool(zone) and rec.precise
    rec.program = rec.program or "virtiofsd"
    rec.thread = tid or tid2
    rec.message = msg if msg is not None else msg2
    return True


def _impl(rec: Record, m: re.Match[str]) -> str:
    """The C daemon prefixes its function name; the Rust wording differs too."""
    text = m.group(0)
    return "c" if text.startswith(("virtio_", "Received", "fv_")) or "QEMU" in text else "rust"


def _listening(rec: Record, m: re.Match[str]) -> Built:
    return VirtiofsdListening, {"implementation": _impl(rec, m)}


def _connected(rec: Record, m: re.Match[str]) -> Built:
    return VirtiofsdClientConnected, {"implementation": _impl(rec, m)}


def _disconnected(rec: Record, m: re.Match[str]) -> Built:
    return VirtiofsdClientDisconnected, {"implementation": _impl(rec, m)}


def _daemon_failed(rec: Record, m: re.Match[str]) -> Built:
    return VirtiofsdDaemonFailed, error_fields(m.group(1))


def _panicked(rec: Record, m: re.Match[str]) -> Built:
    # the pattern reads the whole message, the panic's next line included: its text
    # is the rest of the match, once
    thread, location, text = m.group(1), m.group(2), m.group(3) or ""
    return VirtiofsdPanicked, {
        "thread": thread,
        "location": location,
        "implementation": "rust",
        **error_fields(text),
    }


def _panicked_old(rec: Record, m: re.Match[str]) -> Built:
    r"""``panicked at 'MESSAGE', FILE:LINE:COL``: the location is the last one on the line.

    The pattern takes the rest of the line and the location is looked for here, once:
    ``'(.*)', (\S+:\d+:\d+)`` in one regex rescans the line from every
    ``thread '...' panicked at '`` it holds, which is quadratic.
    """
    rest = m.group(2)
    last = deque(_OLD_PANIC_LOCATION.finditer(rest), maxlen=1)
    if not last:
        return None
    at = last[0]
    return VirtiofsdPanicked, {
        "thread": m.group(1),
        "location": at.group(1),
        "implementation": "rust",
        **error_fields(rest[: at.start()]),
    }


_OLD_PANIC_LOCATION = re.compile(r"', (\S+:\d+:\d+)")


def _fv_panic(rec: Record, m: re.Match[str]) -> Built:
    return VirtiofsdPanicked, {"implementation": "c", **error_fields(m.group(1))}


def _child_terminated(rec: Record, m: re.Match[str]) -> Built:
    """The Rust outer process reports its sandbox child's death by number."""
    signo = int(m.group(1))
    return VirtiofsdChildTerminated, {"signal": signal_name(signo), "signo": signo}


def _start_failed(rec: Record, m: re.Match[str]) -> Built:
    path = m.groupdict().get("path") or m.groupdict().get("source")
    # the error is what follows the words matched (``...error=1:Operation not permitted``)
    return VirtiofsdStartFailed, {"path": path, **error_fields(m.string[m.start() :])}


PATTERNS: list[Pattern] = [
    (
        re.compile(r"(?:virtio_session_mount: )?Waiting for (?:vhost-user|QEMU) socket connection"),
        _listening,
    ),
    (
        re.compile(
            r"Client connected, servicing requests"
            r"|(?:virtio_session_mount: )?Received vhost-user socket connection"
        ),
        _connected,
    ),
    (re.compile(r"Client disconnected, shutting down|virtio_loop: Exit\b"), _disconnected),
    (re.compile(r"Waiting for daemon failed: (.*)"), _daemon_failed),
    (re.compile(r"thread '([^']*)' panicked at ([^\s']+:\d+:\d+):?\s*(.*)"), _panicked),
    (re.compile(r"thread '([^']*)' panicked at '(.*)"), _panicked_old),
    (re.compile(r"fv_panic: (.*)"), _fv_panic),
    (re.compile(r"Child process terminated by signal (\d+)"), _child_terminated),
    # the sandbox could not be set up: C (setgroups, seccomp, mount namespace), Rust (caps)
    (
        re.compile(
            r"setgroups\(\) failed with error|seccomp_init\(\): \w|mount\(/, MS_REC\|MS_SLAVE\): \w"
            r"|can't apply the child capabilities"
        ),
        _start_failed,
    ),
    (
        re.compile(
            r"Failed to start daemon: .*"
            r"|Error creating pid file '(?P<path>[^']*)': .*"
            r"|Error creating listener: .*"
            r"|Error entering sandbox: .*"
            r"|vhost socket (?:bind|accept): .*"
            r"|Failed to create directory .*"
            r"|failed to stat source \(\"(?P<source>[^\"]*)\"\): .*"
        ),
        _start_failed,
    ),
    (
        re.compile(
            r"^(?:shared directory )?(?P<path>\S+) does not exist(?: or is not a directory)?"
        ),
        _start_failed,
    ),
]
