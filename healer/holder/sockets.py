"""The holder's Unix sockets: who is on the other end, and which listener is a share's.

The listening sockets are the data path, so these helpers never connect to find
something out (a connect would use up a daemon's one session): they ask the socket
itself, the file system and the kernel's socket table.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat
import sys
from pathlib import Path

from healer.holder.errors import Refused
from healer.holder.state import Share
from healer.supervise.adopt import socket_owner
from healer.supervise.held import bind_private, listening_inode

__all__ = ["bind", "bound_to", "file_inode", "peer"]


def peer(conn: socket.socket) -> tuple[int, int, int]:
    """The pid, uid and gid of the process at the other end (``SO_PEERCRED``)."""
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    pid, uid, gid = (int.from_bytes(creds[i : i + 4], sys.byteorder) for i in (0, 4, 8))
    return pid, uid, gid


def bound_to(sock: socket.socket, share: Share, *, on_disk: bool = False) -> bool:
    """A listening Unix socket bound to the share's path whose socket file is there (and,
    ``on_disk``, is the very file it made: one replaced by someone else is not ours)."""
    try:
        if sock.family != socket.AF_UNIX or sock.getsockname() != share.socket:
            return False
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return False
        found = os.lstat(share.socket)
        if not stat.S_ISSOCK(found.st_mode):
            return False
        return not on_disk or share.inode is None or found.st_ino == share.inode
    except OSError:
        return False


def file_inode(path: str) -> int | None:
    """The inode of the file at ``path`` itself (a link is not followed), or None."""
    with contextlib.suppress(OSError):
        return os.lstat(path).st_ino
    return None


def shared_directory(path: str) -> str | None:
    """Why the directory of ``path`` is no place for a share's socket, or None. In a
    directory every user may write to, without the sticky bit (or sticky but owned by
    someone else), another user can rename healer's socket away and bind their own:
    the VMM would then connect to them."""
    directory = Path(path).parent
    try:
        found = directory.stat()
    except OSError:
        return None  # binding says what is wrong with it
    if not found.st_mode & stat.S_IWOTH:
        return None
    if found.st_mode & stat.S_ISVTX and found.st_uid in (0, os.getuid()):
        return None
    return (
        f"{directory} is writable by every user"
        f"{'' if found.st_mode & stat.S_ISVTX else ' and not sticky'}: another user could "
        "replace the socket"
    )


SHARED_DIRECTORY_FIX = "put the socket in a directory only healer's user can write to"


def bind(path: str, backlog: int) -> socket.socket:
    """A fresh 0600 listener at ``path``, replacing only a stale socket file."""
    unsafe = shared_directory(path)
    if unsafe is not None:
        raise Refused(f"{unsafe} ({SHARED_DIRECTORY_FIX})")
    target = Path(path)
    if target.exists() or target.is_symlink():
        if not stat.S_ISSOCK(target.lstat().st_mode):
            raise Refused(f"{path} exists and is not a socket")
        # Never connect to find out: a connect would use up a daemon's one session.
        if listening_inode(path) is not None:
            owner = socket_owner(path)
            who = f" (pid {owner})" if owner else ""
            raise Refused(f"{path} is in use by another process{who}")
        target.unlink()  # a stale socket file: nothing listens on it
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        bind_private(sock, path)
    except OSError as exc:
        sock.close()
        raise Refused(f"cannot bind {path}: {exc.strerror}") from exc
    sock.listen(backlog)
    return sock
