"""The HTTP side of the stand-in's API socket: one request per connection.

The stand-in's ``http-server`` thread accepts a connection and hands it here; the
request is read with a bounded wait, routed by :meth:`ChStandIn.dispatch` (which
holds the version's status codes and error bodies) and answered with CH's headers
(``Server: Cloud Hypervisor API``, ``Content-Type: application/json``).
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from healer.sim.cloud_hypervisor import ChStandIn

__all__ = ["serve_connection"]


class _Handler(BaseHTTPRequestHandler):
    """One request per connection; CH's answer headers (Server, Content-Type)."""

    protocol_version = "HTTP/1.1"

    def __init__(self, conn: socket.socket, stand_in: ChStandIn) -> None:
        self.stand_in = stand_in
        super().__init__(conn, "", socketserver.BaseServer("", BaseHTTPRequestHandler))

    def setup(self) -> None:
        super().setup()
        self.connection.settimeout(self.stand_in.request_timeout_s)  # bounded reads

    def do_GET(self) -> None:
        self._answer("GET")

    def do_PUT(self) -> None:
        self._answer("PUT")

    def do_POST(self) -> None:
        self._answer("POST")

    def do_DELETE(self) -> None:
        self._answer("DELETE")

    def _answer(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        status, payload = self.stand_in.dispatch(method, self.path, body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)
        self.close_connection = True

    def version_string(self) -> str:
        return "Cloud Hypervisor API"

    def log_message(self, format: str, *args: Any) -> None:
        return


def serve_connection(conn: socket.socket, stand_in: ChStandIn) -> None:
    """Answer the one request on ``conn``; a client that left or sent garbage is dropped."""
    with contextlib.suppress(OSError, ValueError):  # the client left, or sent garbage
        _Handler(conn, stand_in)
