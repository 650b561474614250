"""What a tailer hands out, and what is journaled to resume it: pure values, no I/O.

A file is known by :class:`FileIdentity` (device, inode and a fingerprint of its first
line), a place in it by :class:`TailPosition`; :class:`TailBatch` is lines of one file
or a marker that it starts or ends, :class:`TailStats` the counters. The tailer
(:mod:`healer.sources.tail`) makes them; the journal's records keep positions.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "BatchKind",
    "FileIdentity",
    "Reason",
    "TailBatch",
    "TailPosition",
    "TailStats",
    "fingerprint",
]

BatchKind = Literal["lines", "start", "end"]
"""What a :class:`TailBatch` carries: lines, or the start or end of a file."""
Reason = Literal["", "new", "rotated", "truncated", "missing"]
"""Why a file starts or ends (empty for lines).

``new``: the first file this tailer reads at its path. ``rotated``: another file took
the path (rename and create, delete and re-create); on an end marker: the file left
the path. ``truncated``: the same file restarts at 0. ``missing``: a journaled file
could not be found again after a restart; what was not yet read of it is lost.
"""


def fingerprint(head: bytes, limit: int) -> str | None:
    """Hash of the first up-to-``limit`` bytes of the first line of ``head``.

    ``None`` while the file holds neither a newline nor ``limit`` bytes: the first
    line may still grow, so it cannot identify the file yet.
    """
    newline = head.find(b"\n", 0, limit)
    if newline >= 0:
        first = head[:newline]
    elif len(head) >= limit:
        first = head[:limit]
    else:
        return None
    return hashlib.blake2b(first, digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class FileIdentity:
    """Which file: device and inode, plus a fingerprint of its first line.

    ``fingerprint`` is ``None`` until the first line is complete or long enough (see
    :func:`fingerprint`); an identity without one matches on device and inode alone.
    """

    device: int
    inode: int
    fingerprint: str | None

    def to_dict(self) -> dict[str, object]:
        return {"device": self.device, "inode": self.inode, "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileIdentity:
        fp = data["fingerprint"]
        return cls(int(data["device"]), int(data["inode"]), None if fp is None else str(fp))

    def same_inode(self, st: os.stat_result) -> bool:
        return (st.st_dev, st.st_ino) == (self.device, self.inode)


@dataclass(frozen=True, slots=True)
class TailPosition:
    """Where to resume a path: the file (``None``: whatever is there is new) and offset."""

    identity: FileIdentity | None
    offset: int

    def to_dict(self) -> dict[str, object]:
        identity = None if self.identity is None else self.identity.to_dict()
        return {"identity": identity, "offset": self.offset}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TailPosition:
        identity = data.get("identity")
        return cls(
            None if identity is None else FileIdentity.from_dict(identity), int(data["offset"])
        )


@dataclass(frozen=True, slots=True)
class TailBatch:
    """Lines of one file, or a marker that a file starts or ends.

    ``kind == "lines"``: ``block`` is whole lines, each ending in a newline, found at
    byte ``offset`` of the file ``identity``. ``kind == "start"``: the file starts at
    ``offset`` 0 (``reason`` says why). ``kind == "end"``: the file is finished at
    ``offset``, everything before it was returned.
    """

    identity: FileIdentity
    offset: int
    block: bytes = b""
    kind: BatchKind = "lines"
    reason: Reason = ""


@dataclass(slots=True)
class TailStats:
    """Counters of one tailer (or several sharing one instance)."""

    bytes_read: int = 0
    lines_cut: int = 0
    partial_lines_flushed: int = 0
    rotations: int = 0
    truncations: int = 0
    files_opened: int = 0
    read_errors: int = 0
