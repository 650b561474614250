"""cloud-hypervisor's HTTP API over its Unix socket, with a bounded time per call.

CH serves HTTP/1.1 on ``--api-socket`` with the prefix ``/api/v1/`` and answers one
request at a time. While ``vm.add-fs``, ``vm.boot`` or ``vm.reboot`` runs its 60 s
vhost-user connect loop, every other call (``vmm.ping`` too) waits for it. So each call
has one overall deadline (connect, send and every read count against it), and running
out of it raises :class:`ChTimeout` instead of hanging. The default covers the 60 s
loop; pass a shorter ``timeout_s`` for a quick liveness probe.

An answer is also bounded in size: a body over :data:`MAX_BODY` (Content-Length or
chunked) is refused while it is read, never read whole, and raises :class:`ChError`.
http.client already bounds the status line and each header line (64 KiB) and the
number of headers (100). ``vm.info`` is checked in the parts healer reads
(:func:`fs_devices`), so a wrong type there is a located :class:`ChError` too.
"""

from __future__ import annotations

import http.client
import socket
import time
from typing import Any

import orjson

from healer.unixsock import connect_unix
from healer.vmm.errors import ChApiError, ChError, ChTimeout, ChUnreachable, error_messages

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "MAX_BODY",
    "MAX_TAG_BYTES",
    "ChApiClient",
    "answer_json",
    "checked_info",
    "fs_config",
    "fs_devices",
]

DEFAULT_TIMEOUT_S = 70.0
"""Longer than CH's hard-coded 60 s connect loop, so a slow add-fs still answers."""
MAX_TAG_BYTES = 36
"""``VIRTIO_FS_TAG_LEN``: CH's CLI parser rejects longer tags."""
MAX_BODY = 1 << 20
"""The largest answer body read: a real VM's ``vm.info`` is a few KiB."""
_READ_STEP = 64 * 1024


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
        """``GET vm.info``: config (with ``fs[]``), state and ``device_tree``; the parts
        healer reads are checked (:func:`checked_info`)."""
        return checked_info(self.request("GET", "vm.info", timeout_s=timeout_s))

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
            status, data = response.status, _read_body(response, what)
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
        return answer_json(status, data, what)


def _read_body(response: http.client.HTTPResponse, what: str) -> bytes:
    """At most MAX_BODY bytes, read in steps: an endless or huge body is refused as it
    comes, before it can fill the memory."""
    if response.length is not None and response.length > MAX_BODY:
        msg = f"{what}: the answer announces {response.length} bytes, over the {MAX_BODY} limit"
        raise ChError(msg)
    data = bytearray()
    while len(data) <= MAX_BODY:
        step = response.read(min(_READ_STEP, MAX_BODY + 1 - len(data)))
        if not step:
            return bytes(data)
        data += step
    msg = f"{what}: the answer's body is over the {MAX_BODY} byte limit"
    raise ChError(msg)


def checked_info(info: dict[str, Any]) -> dict[str, Any]:
    """``info`` itself, once the parts healer reads have the types CH gives them."""
    fs_devices(info)
    tree = info.get("device_tree")
    if tree is not None and not isinstance(tree, dict):
        raise _malformed("device_tree", "an object", tree)
    return info


def fs_devices(info: dict[str, Any]) -> list[dict[str, Any]]:
    """``config.fs`` of a ``vm.info`` answer; a wrong type raises ChError naming the
    field, so that no caller meets an AttributeError (``None`` stands for absent)."""
    config = info.get("config")
    if config is None:
        return []
    if not isinstance(config, dict):
        raise _malformed("config", "an object", config)
    entries = config.get("fs")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise _malformed("config.fs", "a list", entries)
    for index, entry in enumerate(entries):
        where = f"config.fs[{index}]"
        if not isinstance(entry, dict):
            raise _malformed(where, "an object", entry)
        for key in ("id", "tag", "socket"):
            value = entry.get(key)
            if value is not None and not isinstance(value, str):
                raise _malformed(f"{where}.{key}", "a string", value)
        for key in ("num_queues", "queue_size"):
            value = entry.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise _malformed(f"{where}.{key}", "an integer", value)
    return entries


def _malformed(field: str, wanted: str, value: Any) -> ChError:
    shown = repr(value)
    if len(shown) > 80:
        shown = shown[:80] + "..."
    return ChError(f"vm.info: {field} is not {wanted}: {shown}")


def answer_json(status: int, data: bytes, what: str) -> dict[str, Any]:
    """The JSON object of an answer's body (``{}`` when empty); ChApiError for a non-2xx
    status, ChError for a body that is not a JSON object."""
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
