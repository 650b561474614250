"""The listening socket healer binds once and hands to every virtiofsd it starts.

virtiofsd serves one client and exits. If virtiofsd owned the socket, a VMM that
connects while it is being respawned would be refused (ECONNREFUSED) or find no
socket (ENOENT). Held here and passed with ``--fd``, the socket stays listening
across respawns: such a connect waits in the backlog and the next virtiofsd
serves it (about 4 ms after its start, measured on this machine).
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from healer.unixsock import bind_unix

__all__ = ["HeldSocket", "bind_private", "has_client", "is_listening", "listening_inode"]

_SO_ACCEPTCON = 0x10000  # /proc/net/unix "Flags" bit of a listening socket


def bind_private(sock: socket.socket, path: str) -> None:
    """Bind ``sock`` to ``path`` with a socket file only its owner can use (0600); a
    path longer than ``sun_path`` is bound through its directory (healer/unixsock.py)."""
    old = os.umask(0o177)
    try:
        bind_unix(sock, path)
    finally:
        os.umask(old)


class HeldSocket:
    """A private (0600) listening Unix socket at ``path``; ``close()`` removes it."""

    def __init__(self, path: str | Path, *, backlog: int = 16) -> None:
        self.path = Path(path)
        if self.path.exists() or self.path.is_symlink():
            if not stat.S_ISSOCK(self.path.lstat().st_mode):
                msg = f"{self.path} exists and is not a socket; refusing to replace it"
                raise FileExistsError(msg)
            self.path.unlink()  # a stale socket of an earlier run
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        bind_private(self.sock, str(self.path))
        self.sock.listen(backlog)
        self.sock.set_inheritable(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        """Stop listening and remove the path (only if it is still our socket)."""
        try:
            if stat.S_ISSOCK(self.path.lstat().st_mode):
                self.path.unlink()
        except FileNotFoundError:
            pass
        self.sock.close()


def is_listening(path: str | Path, *, proc_net_unix: Path = Path("/proc/net/unix")) -> bool:
    """Whether some process listens on the Unix socket ``path``, without connecting.

    Connecting would end a virtiofsd (it serves one client), so readiness of a
    virtiofsd healer does not own is read from the kernel's socket table.
    """
    return listening_inode(path, proc_net_unix=proc_net_unix) is not None


def listening_inode(
    path: str | Path, *, proc_net_unix: Path = Path("/proc/net/unix")
) -> int | None:
    """The inode of the socket listening on ``path``, from the kernel's socket table."""
    target = str(path)
    with proc_net_unix.open(encoding="utf-8", errors="replace") as table:
        next(table, None)  # header
        for row in table:
            fields = row.split()
            if len(fields) >= 8 and fields[7] == target and int(fields[3], 16) & _SO_ACCEPTCON:
                return int(fields[6])
    return None


def has_client(path: str | Path, *, proc_net_unix: Path = Path("/proc/net/unix")) -> bool:
    """Whether a connection accepted on the socket ``path`` is open (a VMM is served).

    An accepted Unix socket carries its listener's path in the kernel's table, in
    state connected (``03``) and without the listening flag.
    """
    target = str(path)
    with proc_net_unix.open(encoding="utf-8", errors="replace") as table:
        next(table, None)
        for row in table:
            fields = row.split()
            if (
                len(fields) >= 8
                and fields[7] == target
                and fields[5] == "03"
                and not int(fields[3], 16) & _SO_ACCEPTCON
            ):
                return True
    return False
