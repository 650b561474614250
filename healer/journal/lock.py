"""One healer per journal: an exclusive lock on the journal directory.

Two watchdogs on one journal would interleave ``seq`` numbers, fight over the
sockets and each heal every fault. The lock is taken before anything else is
touched (only the directory is created if missing); a second instance gets
:class:`JournalBusy`, naming the one that runs, and touches nothing more. The lock
is an ``flock`` on ``<journal>/lock``: the kernel drops it when the holder dies, so
a crash never leaves a stale lock behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import time
from pathlib import Path

import orjson

from healer.errors import HealerError

__all__ = ["JournalBusy", "JournalLock", "lock_holder"]

LOCK_FILE = "lock"

log = logging.getLogger("healer")


class JournalBusy(HealerError):
    """Another process holds the journal's lock."""

    def __init__(self, directory: Path, pid: int | None, config: str | None) -> None:
        self.directory, self.pid, self.config = directory, pid, config
        who = f"pid {pid}" if pid else "another process"
        using = f" with {config}" if config else ""
        super().__init__(
            f"{directory} is in use by healer {who}{using} (fix: stop that one first, or "
            "give this configuration its own [healer] journal)"
        )


class JournalLock:
    """Held for the life of the process that writes the journal."""

    def __init__(self, directory: Path, fd: int) -> None:
        self.directory = directory
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, directory: Path | str, *, config: str = "") -> JournalLock:
        """Lock ``directory`` (created 0700 if missing) or raise :class:`JournalBusy`."""
        root = Path(directory)
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        keep_private(root)
        fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            busy = _busy(root, fd)
            os.close(fd)
            raise busy from None
        who = {"pid": os.getpid(), "config": config, "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, orjson.dumps(who) + b"\n", 0)
        return cls(root, fd)

    def release(self) -> None:
        """Give the lock up (also done by the kernel when the process ends)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None


def lock_holder(directory: Path | str) -> JournalBusy | None:
    """Who holds the journal's lock (None: nobody), found without writing anything, so
    that ``healer stop`` works on a journal whose disk turned read-only or full."""
    root = Path(directory)
    try:
        fd = os.open(root / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # refused while it is held
    except BlockingIOError:
        return _busy(root, fd)
    finally:
        os.close(fd)
    return None


def _busy(root: Path, fd: int) -> JournalBusy:
    """The error naming the holder the lock file at ``fd`` records."""
    holder = _read(fd)
    pid, conf = holder.get("pid"), holder.get("config")
    return JournalBusy(
        root, pid if isinstance(pid, int) else None, conf if isinstance(conf, str) else None
    )


def _read(fd: int) -> dict[str, object]:
    try:
        data = orjson.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def keep_private(directory: Path) -> None:
    """The journal holds log text and the holder's state: a directory of healer's own
    that others can enter is made 0700 again (said in the log); one of another user is
    only warned about, as healer did not make it."""
    st = directory.stat()
    open_to_others = stat.S_IMODE(st.st_mode) & 0o077
    if not open_to_others:
        return
    if st.st_uid == os.geteuid():
        directory.chmod(0o700)
        log.warning(
            "journal directory %s was mode %03o: made 0700", directory, stat.S_IMODE(st.st_mode)
        )
    else:
        log.warning(
            "journal directory %s (mode %03o) belongs to uid %d, and others can read it: "
            "give healer a directory of its own",
            directory,
            stat.S_IMODE(st.st_mode),
            st.st_uid,
        )
