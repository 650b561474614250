"""Watching a virtiofsd that someone else starts (adopt mode).

Some setups keep their own launcher (a vm.sh, a systemd unit, Kata). Healer then
owns neither the process nor the socket: it finds the daemon through its pid file
or, failing that, as the process holding the listening socket (the socket's inode
in /proc/net/unix, matched against /proc/PID/fd), sees its exit at once through a
pidfd (no polling, and no child relationship needed), and reads readiness from the
kernel's socket table. It never connects: that would end the daemon's one session.

The process holding the socket is not always the daemon: the Rust virtiofsd (with
its default ``--sandbox namespace``) forks at start, and only the child, inside its
own namespaces, holds the listener, while the outer process (the one its launcher
started and its pid file names) waits for it and exits when it dies. So the daemon
is the outermost process of the chain above the socket's holder that runs the same
program image: the same /proc/PID/exe and cmdline (a fork without exec). Both are
compared because a daemon run through its release's loader has the loader as exe.
"""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable
from pathlib import Path

from healer.supervise.held import listening_inode
from healer.supervise.process import exists

__all__ = ["AdoptedVirtiofsd", "daemon_of", "read_pid_file", "socket_owner"]


def read_pid_file(path: str | Path) -> int | None:
    """The pid in a pid file if it names a live process; None otherwise (never raises)."""
    try:
        text = Path(path).read_text(encoding="ascii", errors="replace")[:32]
    except OSError:
        return None
    token = text.strip().split()[0] if text.strip() else ""
    if not token.isdigit():
        return None
    pid = int(token)
    return pid if pid > 0 and exists(pid) else None


def socket_owner(path: str | Path, *, proc: Path = Path("/proc")) -> int | None:
    """The pid of a process holding the socket listening on ``path`` (lowest pid)."""
    inode = listening_inode(path, proc_net_unix=proc / "net" / "unix")
    if inode is None:
        return None
    wanted = f"socket:[{inode}]"
    for entry in sorted((p for p in proc.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)):
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:
            continue  # gone, or not ours to look at
        for fd in fds:
            try:
                if str(fd.readlink()) == wanted:
                    return int(entry.name)
            except OSError:
                continue
    return None


def _image(pid: int, proc: Path) -> tuple[str, bytes] | None:
    """What a process runs: its executable and argv; None if it is gone or has no argv."""
    try:
        cmdline = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None
    try:
        exe = str((proc / str(pid) / "exe").readlink())
    except OSError:
        exe = ""  # not ours to look at: the argv alone must match
    return (exe, cmdline) if cmdline else None


def _parent(pid: int, proc: Path) -> int | None:
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(") ", 1)[-1].split()
    return int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else None


def daemon_of(pid: int, *, proc: Path = Path("/proc")) -> int:
    """The outermost process above ``pid`` (itself included) running the same image.

    For the Rust daemon's sandbox child this is the outer virtiofsd; for a process
    that did not fork itself (the C daemon, Rust with ``--sandbox none``), ``pid``.
    """
    image = _image(pid, proc)
    while image is not None:
        parent = _parent(pid, proc)
        if parent is None or parent <= 1 or _image(parent, proc) != image:
            break
        pid = parent
    return pid


class AdoptedVirtiofsd:
    """One adopted share's daemon: located by pid file or socket, its exit watched."""

    def __init__(self, socket: str, pid_file: str | None = None) -> None:
        self.socket = socket
        self.pid_file = pid_file
        self.pid: int | None = None

    def locate(self) -> int | None:
        """Find the daemon now (pid file first, then the socket's owner), as the
        outermost process of its fork chain (see :func:`daemon_of`)."""
        pid = read_pid_file(self.pid_file) if self.pid_file else None
        if pid is None:
            pid = socket_owner(self.socket)
        if pid is not None:
            pid = daemon_of(pid)
        self.pid = pid
        return pid

    def running(self) -> bool:
        """Whether the located daemon lives; its watcher clears ``pid`` when it exits.

        A plain attribute read: the decision loop asks on every turn.
        """
        return self.pid is not None

    def watch_exit(self, pid: int, on_exit: Callable[[int], object]) -> None:
        """Call ``on_exit(pid)`` from a thread the moment ``pid`` ends.

        A pidfd becomes readable when the process exits, so the thread sleeps in
        ``select`` with no timeout and costs nothing while the daemon lives.
        """

        def wait() -> None:
            try:
                fd = os.pidfd_open(pid)
            except ProcessLookupError:
                fd = -1
            if fd >= 0:
                try:
                    select.select([fd], [], [])
                finally:
                    os.close(fd)
            if self.pid == pid:
                self.pid = None
            on_exit(pid)

        threading.Thread(target=wait, name=f"adopted:{pid}", daemon=True).start()
