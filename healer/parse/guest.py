"""The guest side: kernel messages from fs/fuse/virtio_fs.c and mount(8) errors."""

from __future__ import annotations

import re

from healer.events import GuestMountFailed, GuestReboot, GuestTagNotFound
from healer.parse.patterns import Built, Pattern
from healer.parse.record import Record

__all__ = ["KEYWORDS", "PATTERNS", "PROGRAM", "match_dmesg"]

PROGRAM: str | None = "kernel"
"""Who prints the messages below when the line itself does not say."""

# Literal needles for the prefilter (see cloud_hypervisor.KEYWORDS).
KEYWORDS = ("virtio-fs: tag", "reboot: ", ": wrong fs type", ": unknown filesystem type")

_DMESG = re.compile(r"^\[\s*(\d+\.\d+)\] (.*)")


def match_dmesg(rec: Record) -> bool:
    """Read a ``[   27.772246] `` kernel timestamp (seconds since guest boot)."""
    m = _DMESG.match(rec.payload)
    if m is None:
        return False
    rec.program = rec.program or "kernel"
    rec.uptime = float(m.group(1))
    rec.domain = "guest"
    rec.message = m.group(2)
    return True


def _tag_not_found(rec: Record, m: re.Match[str]) -> Built:
    return GuestTagNotFound, {"tag": m.group(1), "error_kind": "NotFound"}


def _wrong_fs(rec: Record, m: re.Match[str]) -> Built:
    rec.program = rec.program or "mount"
    return GuestMountFailed, {
        "mountpoint": m.group(1),
        "tag": m.group(2),
        "reason": "wrong fs type",
    }


def _unknown_fs(rec: Record, m: re.Match[str]) -> Built:
    rec.program = rec.program or "mount"
    return GuestMountFailed, {
        "mountpoint": m.group(1),
        "reason": f"unknown filesystem type {m.group(2)}",
        "error_kind": "Unsupported",
    }


def _reboot(rec: Record, m: re.Match[str]) -> Built:
    action = "power-off" if m.group(1) == "Power down" else "restart"
    return GuestReboot, {"action": action}


PATTERNS: list[Pattern] = [
    # a tag is at most 36 bytes (virtio-fs); the bound keeps the match linear
    (re.compile(r"virtio-fs: tag <([^>]{0,255})> not found"), _tag_not_found),
    (
        re.compile(r"mount: (\S+?): wrong fs type, bad option, bad superblock on ([^,\s]+),"),
        _wrong_fs,
    ),
    (re.compile(r"mount: (\S+?): unknown filesystem type '([^']+)'"), _unknown_fs),
    (re.compile(r"reboot: (Restarting system|machine restart|Power down)"), _reboot),
]
