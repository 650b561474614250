"""The same calls through ch-remote, for users who already drive CH with it.

ch-remote prints a success body on stdout and exits 0. On failure it exits 1 and
prints one of these on stderr (log-formats.md §1.2):

- up to v46: ``Error running command: Server responded with an error: <Status>: <body>``
  and ``Error running command: Error opening HTTP socket: <io error>``;
- from v47: ``Error: ch-remote exited with the following chain of errors:`` with
  numbered levels, ``Server responded with <Status>`` and then the body's items, or an
  ``X:`` level when the body was not the JSON list; an unreachable socket is logged
  as ``[<time> ERROR ch_remote] Error opening HTTP socket: <io error>``.

The argv is a list (no shell); ``argv_prefix`` names the binary and the socket.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Sequence
from typing import Any

import orjson

from healer.supervise.capture import MAX_OUTPUT, run_captured
from healer.vmm.ch_api import DEFAULT_TIMEOUT_S, checked_info, fs_config
from healer.vmm.errors import (
    STATUS_CODES,
    ChApiError,
    ChError,
    ChTimeout,
    ChUnreachable,
    error_messages,
)

__all__ = ["ChRemote", "failure"]

_OS_ERROR = re.compile(r"\(os error (\d+)\)")
_OLD_SERVER = re.compile(
    r"Error running command: Server responded with an error: (\w+)(?:: ?(.*))?", re.S
)
_LEVEL = re.compile(r"^\s*(\d+|X): (.*)$")
_STATUS = re.compile(r"^Server responded with (\w+)$")
_DEBUG_STATUS = re.compile(r"ServerResponse\((\w+)")
_BROKEN_BODY = re.compile(r"body='(.*)'$", re.S)
_SOCKET = ("Error opening HTTP socket", "Error writing to or reading from HTTP socket")


class ChRemote:
    """ChApiClient's calls run as ``[*argv_prefix, <command>, ...]``."""

    def __init__(self, argv_prefix: Sequence[str], *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        if not argv_prefix:
            msg = "argv_prefix must name ch-remote, e.g. ['ch-remote', '--api-socket', PATH]"
            raise ValueError(msg)
        if timeout_s <= 0:
            msg = f"timeout_s must be positive, got {timeout_s}"
            raise ValueError(msg)
        self.argv_prefix = [str(a) for a in argv_prefix]
        self.timeout_s = timeout_s

    def ping(self, *, timeout_s: float | None = None) -> dict[str, Any]:
        return self.run(["ping"], timeout_s=timeout_s)

    def info(self, *, timeout_s: float | None = None) -> dict[str, Any]:
        return checked_info(self.run(["info"], timeout_s=timeout_s))

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
        """``add-fs tag=…,socket=…,num_queues=…,queue_size=…,id=…``."""
        body = fs_config(
            tag=tag,
            socket=socket,
            device_id=device_id,
            num_queues=num_queues,
            queue_size=queue_size,
        )
        for key, value in body.items():
            if isinstance(value, str) and ("," in value or '"' in value):
                msg = f"{key}={value!r}: ch-remote's option syntax cannot carry ',' or '\"'"
                raise ValueError(msg)
        option = ",".join(f"{k}={v}" for k, v in body.items())
        return self.run(["add-fs", option], timeout_s=timeout_s)

    def remove_device(self, device_id: str, *, timeout_s: float | None = None) -> None:
        self.run(["remove-device", device_id], timeout_s=timeout_s)

    def reboot(self, *, timeout_s: float | None = None) -> None:
        self.run(["reboot"], timeout_s=timeout_s)

    def run(self, args: Sequence[str], *, timeout_s: float | None = None) -> dict[str, Any]:
        """Run one command; the JSON object it printed, ``{}`` when it printed nothing."""
        limit = self.timeout_s if timeout_s is None else timeout_s
        argv = [*self.argv_prefix, *args]
        target = " ".join(argv[: len(self.argv_prefix)])
        try:
            done = run_captured(argv, timeout_s=limit)
        except subprocess.TimeoutExpired:  # run() has killed and reaped the child
            raise ChTimeout(target, f"ch-remote {args[0]}", limit) from None
        except OSError as exc:
            msg = f"cannot run {argv[0]}: {exc}"
            raise ChError(msg) from None
        if done.stdout_cut:
            msg = f"ch-remote {args[0]} printed more than {MAX_OUTPUT} bytes"
            raise ChError(msg)
        stdout = done.stdout.decode("utf-8", "replace")
        if done.returncode != 0:
            raise failure(target, done.returncode, stderr=done.stderr.decode("utf-8", "replace"))
        text = stdout.strip()
        if not text:
            return {}
        try:
            value: Any = orjson.loads(text)
        except orjson.JSONDecodeError:
            msg = f"ch-remote {args[0]} printed something that is not JSON: {text[:200]!r}"
            raise ChError(msg) from None
        if not isinstance(value, dict):
            msg = f"ch-remote {args[0]} printed JSON that is not an object: {text[:200]!r}"
            raise ChError(msg)
        return value


def failure(target: str, returncode: int, *, stderr: str) -> ChError:
    """The error a failed ch-remote run stands for, read from its stderr."""
    text = stderr.strip()
    for needle in _SOCKET:
        if needle in text:
            reason = text.split(needle, 1)[1].lstrip(": \n").splitlines()
            errno = _OS_ERROR.search(text)
            return ChUnreachable(
                target,
                reason[0] if reason else needle,
                errno=int(errno.group(1)) if errno else None,
            )
    old = _OLD_SERVER.search(text)
    if old is not None:
        body = (old.group(2) or "").strip()
        return ChApiError(STATUS_CODES.get(old.group(1)), error_messages(body), text)
    if "chain of errors" in text:
        chained = _chain(text)
        if chained is not None:
            return chained
    tail = " | ".join(text.splitlines()[-3:]) or "(nothing on stderr)"
    return ChError(f"{target}: ch-remote exited {returncode}: {tail}")


def _chain(text: str) -> ChApiError | None:
    levels = [m.groups() for m in map(_LEVEL.match, text.splitlines()) if m]
    debug = _DEBUG_STATUS.search(text)
    status = STATUS_CODES.get(debug.group(1)) if debug else None
    for index, (level, message) in enumerate(levels):
        named = _STATUS.match(message)
        if named is not None:
            rest = tuple(m for _, m in levels[index + 1 :])
            return ChApiError(STATUS_CODES.get(named.group(1), status), rest, text)
        if level == "X":
            body = _BROKEN_BODY.search(message)
            return ChApiError(status, error_messages(body.group(1) if body else message), text)
    return None
