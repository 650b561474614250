"""What the holder keeps about each share, and the file that lets a new holder go on.

``holder.json`` (0600, written atomically on every change) records, per share, its
socket and the socket's inode, the newest generation it started, and the daemon that
runs now with the pid's start time from /proc: a holder started after the last one
died takes over a daemon only when the pid still runs *and* its start time matches,
never on the pid alone (pids are reused). Exits the brain has not acknowledged are
kept here too, so none is lost when holder and brain go down together.
"""

from __future__ import annotations

import contextlib
import os
import socket as sockets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from healer.holder.protocol import DaemonState, Exited, ShareState

__all__ = ["Daemon", "Share", "Store", "start_time"]

VERSION = 1


def start_time(pid: int) -> int | None:
    """The pid's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        return int(fields[19])  # field 22 counts from 1 and includes pid and comm
    except (IndexError, ValueError):
        return None


@dataclass(slots=True)
class Daemon:
    """One running virtiofsd of a share."""

    generation: int
    pid: int
    started_at: float
    starttime: int | None
    argv: tuple[str, ...]
    child: bool = True  # the holder's own child (its exit status can be read)
    pidfd: int | None = None  # for a daemon that is not its child: readable on exit

    def state(self) -> DaemonState:
        return DaemonState(self.generation, self.pid, self.started_at, not self.child)

    def fields(self) -> dict[str, object]:
        """As ``holder.json`` keeps it (a reexec adds ``child``)."""
        return {
            "generation": self.generation,
            "pid": self.pid,
            "started_at": self.started_at,
            "starttime": self.starttime,
            "argv": list(self.argv),
        }

    @classmethod
    def from_fields(cls, d: Mapping[str, Any]) -> Daemon:
        return cls(
            int(d["generation"]),
            int(d["pid"]),
            float(d["started_at"]),
            d.get("starttime"),
            tuple(d.get("argv", ())),
            child=bool(d.get("child", True)),
        )


@dataclass(slots=True)
class Share:
    """A share the holder keeps a listener (and maybe a daemon) for."""

    name: str
    socket: str
    inode: int | None = None
    listener: sockets.socket | None = None
    daemon: Daemon | None = None
    generation: int = 0  # the newest generation ever started

    def state(self) -> ShareState:
        daemon = self.daemon.state() if self.daemon is not None else None
        return ShareState(self.name, self.socket, self.inode, self.listener is not None, daemon)

    def fields(self) -> dict[str, object]:
        """As ``holder.json`` keeps it (the name is the key)."""
        daemon = self.daemon.fields() if self.daemon is not None else None
        return {
            "socket": self.socket,
            "inode": self.inode,
            "generation": self.generation,
            "daemon": daemon,
        }

    @classmethod
    def from_fields(cls, name: str, raw: Mapping[str, Any]) -> Share:
        share = cls(str(name), str(raw["socket"]), raw.get("inode"))
        share.generation = int(raw.get("generation", 0))
        if raw.get("daemon"):
            share.daemon = Daemon.from_fields(raw["daemon"])
        return share


@dataclass(slots=True)
class Store:
    """The state file of one holder directory."""

    path: Path

    def load(self) -> tuple[list[Share], list[Exited]]:
        try:
            data = orjson.loads(self.path.read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return [], []
        if not isinstance(data, dict) or data.get("v") != VERSION:
            return [], []
        shares = []
        for name, raw in (data.get("shares") or {}).items():
            with contextlib.suppress(KeyError, TypeError, ValueError):
                shares.append(Share.from_fields(name, raw))
        exits = []
        for raw in data.get("exits") or []:
            with contextlib.suppress(AttributeError, ValueError):  # not an object, a bad field
                exits.append(Exited.from_fields(raw))
        return shares, exits

    def save(self, shares: dict[str, Share], exits: list[Exited]) -> None:
        data = {
            "v": VERSION,
            "pid": os.getpid(),
            "shares": {s.name: s.fields() for s in shares.values()},
            "exits": [e.fields() for e in exits],
        }
        tmp = self.path.with_suffix(".tmp")
        with contextlib.suppress(OSError):  # a full or read-only disk: the data path matters more
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(orjson.dumps(data))
            # No fsync: the file only matters while this boot lasts (after a power loss
            # there are no daemons to take over), and a slow disk must not hold the
            # holder's loop. The rename keeps it whole for a holder that crashes.
            tmp.replace(self.path)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()
