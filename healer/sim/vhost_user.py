"""A minimal vhost-user front end: the VMM's side of the virtiofsd socket.

Enough of the protocol to be a real client for a real virtiofsd: the 12-byte
little-endian header (request, flags, size), ``GET_FEATURES``,
``GET_PROTOCOL_FEATURES`` and ``SET_OWNER``. Every wait is bounded by a timeout.
"""

from __future__ import annotations

import socket
import struct
from types import TracebackType

__all__ = ["VhostUserError", "VhostUserFrontend"]

GET_FEATURES = 1
SET_OWNER = 3
GET_PROTOCOL_FEATURES = 15
_VERSION = 0x1
_REPLY = 0x4
_HEADER = struct.Struct("<III")
_PROTOCOL_FEATURES_BIT = 1 << 30


class VhostUserError(Exception):
    """The backend closed the connection or answered out of protocol."""


class VhostUserFrontend:
    """One connection to a vhost-user backend socket."""

    def __init__(self, path: str, *, timeout_s: float = 2.0) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout_s)
        try:
            self.sock.connect(path)
        except OSError:
            self.sock.close()
            raise

    def __enter__(self) -> VhostUserFrontend:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.sock.close()

    def get_features(self) -> int:
        """The backend's virtio feature bits (proves it is being served)."""
        return self._get_u64(GET_FEATURES)

    def handshake(self) -> dict[str, int]:
        """GET_FEATURES, GET_PROTOCOL_FEATURES when offered, then SET_OWNER."""
        answer = {"features": self.get_features()}
        if answer["features"] & _PROTOCOL_FEATURES_BIT:
            answer["protocol_features"] = self._get_u64(GET_PROTOCOL_FEATURES)
        self.sock.sendall(_HEADER.pack(SET_OWNER, _VERSION, 0))
        return answer

    def _get_u64(self, request: int) -> int:
        self.sock.sendall(_HEADER.pack(request, _VERSION, 0))
        got, flags, size = _HEADER.unpack(self._recv(_HEADER.size))
        if got != request or not flags & _REPLY or size < 8:
            msg = f"unexpected reply {got}/{flags:#x}/{size} to request {request}"
            raise VhostUserError(msg)
        (value,) = struct.unpack("<Q", self._recv(size)[:8])
        return int(value)

    def _recv(self, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                msg = f"EOF after {len(data)} of {size} bytes from {self.path}"
                raise VhostUserError(msg)
            data += chunk
        return data
