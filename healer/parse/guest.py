"""The guest side: kernel messages from fs/fuse/virtio_fs.c, mount(8) errors (also as
a reporter pasted them, without mount's prefix), dracut's, and a macOS guest's
``mount_virtiofs``."""

from __future__ import annotations

import re

from healer.events import GuestMountFailed, GuestReboot, GuestTagNotFound
from healer.parse.patterns import Built, Pattern
from healer.parse.record import Record

__all__ = ["DMESG", "KEYWORDS", "PATTERNS", "PROGRAM", "match_dmesg"]

PROGRAM: str | None = "kernel"
"""Who prints the messages below when the line itself does not say."""

# Literal needles for the prefilter (see cloud_hypervisor.KEYWORDS).
KEYWORDS = (
    "virtio-fs: tag",
    "reboot: ",
    "wrong fs type, bad option",
    ": unknown filesystem type",
    "mount_virtiofs: fs_tag ",
    "virtiofs: failed to mount",
    "mount: /",
)

DMESG = re.compile(r"^\[\s*(\d+\.\d+)\] (.*)")


def match_dmesg(rec: Record) -> bool:
    """Read a ``[   27.772246] `` kernel timestamp (seconds since guest boot)."""
    m = DMESG.match(rec.payload)
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


def _wrong_fs_bare(rec: Record, m: re.Match[str]) -> Built:
    """mount(8)'s text as pasted without its ``mount: <dir>:`` prefix."""
    rec.program = rec.program or "mount"
    return GuestMountFailed, {"mountpoint": None, "tag": m.group(1), "reason": "wrong fs type"}


def _mount_exit(rec: Record, m: re.Match[str]) -> Built:
    """A macOS guest's mount(8): ``mount: <dir> failed with <status>``."""
    rec.program = rec.program or "mount"
    return GuestMountFailed, {"mountpoint": m.group(1), "reason": f"failed with {m.group(2)}"}


def _root_fs(rec: Record, m: re.Match[str]) -> Built:
    """dracut gave up mounting a virtiofs root (its own words, after mount's)."""
    rec.program = rec.program or "dracut"
    return GuestMountFailed, {"mountpoint": None, "reason": "failed to mount root fs"}


def _fs_tag(rec: Record, m: re.Match[str]) -> Built:
    """A macOS guest's mount_virtiofs knows no device with this tag."""
    rec.program = rec.program or "mount_virtiofs"
    return GuestTagNotFound, {"tag": m.group(1), "error_kind": "NotFound"}


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
    (re.compile(r"(?<!: )wrong fs type, bad option, bad superblock on ([^,\s]+),"), _wrong_fs_bare),
    (re.compile(r"mount: (\S+?): unknown filesystem type '([^']+)'"), _unknown_fs),
    (re.compile(r"mount_virtiofs: fs_tag (\S{1,255}) not found"), _fs_tag),
    (re.compile(r"virtiofs: failed to mount root fs"), _root_fs),
    (re.compile(r"mount: (/\S{0,4096}) failed with (\d+)"), _mount_exit),
    (re.compile(r"reboot: (Restarting system|machine restart|Power down)"), _reboot),
]
