"""cloud-hypervisor's HTTP API over its Unix socket, with a bounded time per call.

CH serves HTTP/1.1 on ``--api-socket`` with the prefix ``/api/v1/`` and answers one
request at a time. While ``vm.add-fs``, ``vm.boot`` or ``vm.reboot`` runs its 60 s
vhost-user connect loop, every other call (``vmm.ping`` too) waits for it. So each call
has one overall deadline (connect, send and every read count against it), and running
out of it raises :class:`ChTimeout` instead of hanging. The default covers the 60 s
loop; pass a shorter ``timeout_s`` for a quick liveness probe.
"""

from __future__ import annotations

import http.client
import socket
import time
from typing import Any

import orjson

from healer.unixsock import connect_unix
from healer.vmm.errors import ChApiError, ChError, ChTimeout, ChUnreachable, error_messages

__all__ = ["DEFAULT_TIMEOUT_S", "MAX_TAG_BYTES", "ChApiClient", "fs_config"]

DEFAULT_TIMEOUT_S = 70.0
"""Longer than CH's hard-coded 60 s connect loop, so a slow add-fs still answers."""
MAX_TAG_BYTES = 36
"""``VIRTIO_FS_TAG_LEN``: CH's CLI parser rejects longer tags."""


def fs_config(
    *, tag: str, socket: str, device_id: str, num_queues: int = 1, queue_size: int = 1024
) -> dict[str, Any]:
    """The ``FsConfig`` body for ``vm.add-fs``; the explicit id keeps the name stable."""
    if not tag or len(tag.encode()) > MAX_TAG_BYTES:
        msg = f"the tag must be 1 to {MAX_TAG_BYTES} bytes, got {tag!r}"
        raise ValueError(msg)
    if not device_id:
        msg = "an explicit device id is required (CH would invent _fs<N>)"
        raise ValueError(msg)
    return {
        "tag": tag,
        "socket": socket,
        "num_queues": num_queues,
        "queue_size": queue_size,
        "id": device_id,
    }


class _DeadlineSocket(socket.socket):
    """A socket whose every wait shrinks to what is left of one overall deadline."""

    deadline = 0.0

    def _arm(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline passed")
        self.settimeout(left)

    def connect(self, address: Any, /) -> None:
        self._arm()
        super().connect(address)

    def sendall(self, *args: Any, **kwargs: Any) -> None:
        self._arm()
        super().sendall(*args, **kwargs)

    def recv(self, *args: Any, **kwargs: Any) -> bytes:
        self._arm()
        return super().recv(*args, **kwargs)

    def recv_into(self, *args: Any, **kwargs: Any) -> int:
        self._arm()
        return super().recv_into(*args, **kwargs)


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, deadline: float) -> None:
        super().__init__("localhost")
        self._path = path
        self._deadline = deadline

    def connect(self) -> None:
        def make() -> _DeadlineSocket:
            sock = _DeadlineSocket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.deadline = self._deadline
            return sock

        self.sock = connect_unix(self._path, None, make=make)


class ChApiClient:
    """Calls to one cloud-hypervisor API socket; a new connection per call."""

    def __init__(self, api_socket: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if timeout_s <= 0:
            msg = f"timeout_s must be positive, got {timeout_s}"
            raise ValueError(msg)
        self.api_socket = str(api_socket)
        self.timeout_s = timeout_s

    def ping(self, *, timeout_s: float | None = None) -> dict[str, Any]:
        """``GET vmm.ping``: the VMM's version (and build, pid, features from v32/v36)."""
        return self.request("GET", "vmm.ping", timeout_s=timeout_s)

    def info(self, *, timeout_s: float | None = None) -> dict[str, Any]:
        """``GET vm.info``: config (with ``fs[]``), state and ``device_tree``."""
        return self.request("GET", "vm.info", timeout_s=timeout_s)

    def add_fs(
        self,
        *,
        tag: str,
        socket: str,
        device_id: str,
        num_queues: int = 1,
        queue_size: int = 1024,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """``PUT vm.add-fs``: ``{"id", "bdf"}`` when hot-plugged, ``{}`` on a cold add."""
        body = fs_config(
            tag=tag,
            socket=socket,
            device_id=device_id,
            num_queues=num_queues,
            queue_size=queue_size,
        )
        return self.request("PUT", "vm.add-fs", body, timeout_s=timeout_s)

    def remove_device(self, device_id: str, *, timeout_s: float | None = None) -> None:
        """``PUT vm.remove-device``: 204 means requested, not ejected (issue #8763)."""
        self.request("PUT", "vm.remove-device", {"id": device_id}, timeout_s=timeout_s)

    def reboot(self, *, timeout_s: float | None = None) -> None:
        """``PUT vm.reboot`` (no body: CH answers 400 to one)."""
        self.request("PUT", "vm.reboot", timeout_s=timeout_s)

    def request(
        self,
        method: str,
        endpoint: str,
        body: dict[str, Any] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """One call: the JSON object answered, ``{}`` for an empty success."""
        limit = self.timeout_s if timeout_s is None else timeout_s
        what = f"{method} /api/v1/{endpoint}"
        conn = _UnixConnection(self.api_socket, time.monotonic() + limit)
        payload = None if body is None else orjson.dumps(body)
        try:
            # By hand: http.client would send "Content-Length: 0" on a PUT without
            # a body, and CH wants no body at all on vm.reboot.
            conn.putrequest(method, f"/api/v1/{endpoint}", skip_accept_encoding=True)
            conn.putheader("Accept", "*/*")
            if payload is not None:
                conn.putheader("Content-Type", "application/json")
                conn.putheader("Content-Length", str(len(payload)))
            conn.endheaders(payload)
            response = conn.getresponse()
            status, data = response.status, response.read()
        except TimeoutError:
            raise ChTimeout(self.api_socket, what, limit) from None
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ChUnreachable(
                self.api_socket, exc.strerror or str(exc), errno=exc.errno
            ) from None
        except http.client.RemoteDisconnected:
            raise ChUnreachable(self.api_socket, "closed without an answer") from None
        except http.client.HTTPException as exc:
            msg = f"{what}: not an HTTP answer from {self.api_socket}: {exc!r}"
            raise ChError(msg) from None
        except OSError as exc:  # reset, broken pipe, permission denied, not a socket
            raise ChUnreachable(self.api_socket, str(exc), errno=exc.errno) from None
        finally:
            conn.close()
        return _answer(status, data, what)


def _answer(status: int, data: bytes, what: str) -> dict[str, Any]:
    if not 200 <= status < 300:
        raise ChApiError(status, error_messages(data), data.decode("utf-8", "replace"))
    if not data.strip():
        return {}
    try:
        value: Any = orjson.loads(data)
    except orjson.JSONDecodeError:
        msg = f"{what}: answered {status} with a body that is not JSON: {data[:200]!r}"
        raise ChError(msg) from None
    if not isinstance(value, dict):
        msg = f"{what}: answered {status} with JSON that is not an object: {data[:200]!r}"
        raise ChError(msg)
    return value
