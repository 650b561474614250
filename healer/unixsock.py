"""Unix stream and seqpacket sockets by path: a bounded connect, and paths longer than
the kernel's address (``sun_path``, 108 bytes) reached through their directory.

healer's own sockets (the control socket beside the journal, the holder's) live in
directories the user chose; a journal deep in a build tree or a test's temporary
directory easily makes a path too long to bind ("AF_UNIX path too long"). Such a
path is bound and connected as ``/proc/self/fd/N/NAME``, N an ``O_PATH`` descriptor
of its directory, which the kernel resolves like any directory.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator

__all__ = ["SUN_PATH_MAX", "addressable", "bind_unix", "connect_path", "connect_unix"]

SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes, with the terminating NUL


@contextlib.contextmanager
def addressable(path: str) -> Iterator[str]:
    """``path`` as ``bind``/``connect`` can take it, for the duration of the block.

    A short path is itself; a long one goes through its directory's descriptor,
    closed when the block ends (the bound socket file stays where ``path`` says).
    """
    if len(os.fsencode(path)) <= SUN_PATH_MAX:
        yield path
        return
    parent, name = os.path.split(path)
    fd = os.open(parent or ".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield f"/proc/self/fd/{fd}/{name}"
    finally:
        os.close(fd)


def bind_unix(sock: socket.socket, path: str) -> None:
    """``sock.bind(path)``, for a path of any length."""
    with addressable(path) as address:
        sock.bind(address)


def connect_path(sock: socket.socket, path: str) -> None:
    """``sock.connect(path)``, for a path of any length."""
    with addressable(path) as address:
        sock.connect(address)


def connect_unix(
    path: str,
    timeout_s: float | None,
    *,
    make: Callable[[], socket.socket] | None = None,
) -> socket.socket:
    """A stream socket connected to ``path`` (``timeout_s`` for every call on it);
    ``make`` builds the socket (a subclass with its own deadline). OSError if it fails."""
    sock = make() if make is not None else socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        if timeout_s is not None:
            sock.settimeout(timeout_s)
        sock.connect(path)
    except BaseException:
        sock.close()
        raise
    return sock
