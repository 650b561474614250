"""QEMU as the VMM: its own words when the vhost-user-fs backend cannot be reached.

QEMU prints these on stderr, which a management layer often wraps (libvirt's "qemu
unexpectedly closed the monitor: ...", Kata's "error messages from qemu log: ...").
Its vhost-user messages are the same for every vhost-user device. A failure to set
the device up counts only when the line names the fs device (``-device
vhost-user-fs-pci,...``) or a virtio-fs socket. Three words of a running session's
loss (a write or header read that failed with -1, an end of file mid-message) are
read as the backend gone even when the line names no device: in a QEMU log of a VM
with a virtio-fs share they are what a reader takes them for, and a burst of them is
one loss (healer/parse/repeats.py). A VM that also has vhost-user-blk devices cannot
be told apart this way (docs/events.md).
"""

from __future__ import annotations

import re

from healer.events import BackendConnectFailed, BackendDisconnected
from healer.eventtime import parse_iso
from healer.parse.patterns import Built, Pattern, error_fields
from healer.parse.record import Record

__all__ = ["KEYWORDS", "PATTERNS", "PROGRAM"]

PROGRAM: str | None = "qemu"
"""Who prints the messages below when the line itself does not say."""

# Literal needles for the prefilter (see cloud_hypervisor.KEYWORDS).
KEYWORDS = (
    "vhost-user-fs-pci,",
    "Failed to connect to '",
    "Unexpected end-of-file before all data were read",
    "Failed to write msg. Wrote -1",
    "Failed to read msg header. Read -1",
)

_STAMP_BEFORE = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?Z) [\w.-]{1,40}: $")
_FS_SOCKET = re.compile(r"virtio-?fs|vhost-(?:user-)?fs|vfsd", re.IGNORECASE)


def _own_stamp(rec: Record, text: str, at: int) -> None:
    """QEMU's own UTC stamp just before its name (``2021-03-17T23:15:49.330206Z
    qemu-kvm: ...``) dates the record when no wrapper with a zone did."""
    m = _STAMP_BEFORE.search(text, max(0, at - 96), at)
    if m is not None and not rec.zoned:
        rec.wall, rec.precise, rec.zoned = parse_iso(m.group(1)), True, True


def _device_failed(rec: Record, m: re.Match[str]) -> Built:
    """``-device vhost-user-fs-pci,...: <what failed>``: the device could not be set up."""
    _own_stamp(rec, m.string, m.start())
    return BackendConnectFailed, {**error_fields(m.group(1)), "socket": None}


def _connect_failed(rec: Record, m: re.Match[str]) -> Built:
    """A chardev socket refused; only a virtio-fs one is about a share."""
    socket, error = m.group(1), m.group(2)
    if _FS_SOCKET.search(socket) is None:
        return None
    return BackendConnectFailed, {**error_fields(error), "socket": socket}


def _session_lost(rec: Record, m: re.Match[str]) -> Built:
    """QEMU's own line (``qemu-system-x86_64: ...``) that the session's socket broke."""
    _own_stamp(rec, m.string, m.start())
    return BackendDisconnected, {"socket": None}


PATTERNS: list[Pattern] = [
    (
        re.compile(
            r"-device vhost-user-fs-pci,[^:\s]{0,512}: ((?:Failed to (?:read|write) msg"
            r"|vhost_(?:dev|backend)_init failed|Failed to connect to)[^\\\n]{0,512})"
        ),
        _device_failed,
    ),
    (re.compile(r"Failed to connect to '([^']{1,4096})': ([A-Z][\w ]{0,64})"), _connect_failed),
    (
        re.compile(
            r"\bqemu[\w.-]{0,40}: (?:Unexpected end-of-file before all data were read"
            r"|Failed to write msg\. Wrote -1 instead of \d{1,6}"
            r"|Failed to read msg header\. Read -1 instead of \d{1,6})"
        ),
        _session_lost,
    ),
]
