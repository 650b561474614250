"""``python -m healer.holder --dir DIR``: the holder process (see server.py).

Start-up only: the arguments, the directory's lock (one holder per directory), the
subreaper bit, then :class:`~healer.holder.server.Holder` runs. A reexec comes back
through here with the state it carried and the lock it already holds.
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import orjson

from healer.holder import server
from healer.holder.server import Holder, say

__all__ = ["main"]

_PR_SET_CHILD_SUBREAPER = 36


def _lock(directory: Path) -> int | None:
    """The directory's lock, or None (with a message) when another holder has it."""
    fd = os.open(directory / "holder.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        other = os.pread(fd, 32, 0).decode(errors="replace").strip()
        say(f"holder already running: pid {other or '?'}", logging.ERROR)
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def main(argv: Sequence[str] | None = None) -> int:
    """Run the holder of ``--dir`` in the foreground (``--detach``: in the background)."""
    parser = argparse.ArgumentParser(prog="healer-holder", description=server.__doc__)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--inherit", type=int, help=argparse.SUPPRESS)  # reexec only
    parser.add_argument("--lock", type=int, help=argparse.SUPPRESS)  # reexec only
    parser.add_argument(
        "--detach", action="store_true", help="go to the background (no parent to outlive)"
    )
    args = parser.parse_args(argv)
    if args.detach and os.fork() > 0:
        os._exit(0)  # the starter reaps this at once; the holder is nobody's child
    directory: Path = args.dir.absolute()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    inherited = None
    if args.inherit is not None:
        with os.fdopen(args.inherit, "rb") as carried:
            carried.seek(0)
            inherited = orjson.loads(carried.read())
    if args.lock is not None:  # the image before this one held it: it is ours
        lock: int | None = args.lock
        os.set_inheritable(args.lock, False)
    else:
        lock = _lock(directory)
    if lock is None:
        return 0
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    holder = Holder(directory, lock)
    holder.restore(inherited)
    holder.bind_control()
    return holder.serve()


if __name__ == "__main__":
    sys.exit(main())
