"""One way to connect to a Unix stream socket with a bound wait (the VMM's API, QMP,
a serial console): the socket is closed again if the connect fails."""

from __future__ import annotations

import socket
from collections.abc import Callable

__all__ = ["connect_unix"]


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
