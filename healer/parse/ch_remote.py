"""ch-remote output: the API client's success bodies and errors of every version.

Before v47: ``Error running command: <Display>``; from v47 a chain of errors like the
VMM's. An unreachable socket (the VMM is gone) is kept apart from an error answer.
"""

from __future__ import annotations

import re

from healer.events import ApiError, ApiUnreachable, DeviceAdded
from healer.parse.patterns import Built, Pattern, error_fields
from healer.parse.record import Record

__all__ = ["KEYWORDS", "PATTERNS", "PROGRAM"]

PROGRAM: str | None = "ch-remote"
"""Who prints the messages below when the line itself does not say."""

# Literal needles for the prefilter (see cloud_hypervisor.KEYWORDS).
KEYWORDS = (
    "Error opening HTTP socket",
    "Error running command",
    "chain of errors",
    "Error: HttpApiClient",
    '","bdf":"',
    "  reason: ",
)

_CAUSE = re.compile(r"^\s*(?:\d+|X): (.*)$")
_STATUS = re.compile(r"Server responded with (?:an error: )?([A-Z]\w+)")
_RESPONSE = re.compile(r"ServerResponse\((\w+)")
_UNREACHABLE = re.compile(r"Error opening HTTP socket|Socket\(|HTTP socket|ConnectionRefused")


_HTTP_STATUS = {  # the old ch-remote printed numbers, the newer one these names
    "400": "BadRequest",
    "404": "NotFound",
    "405": "MethodNotAllowed",
    "500": "InternalServerError",
    "503": "ServiceUnavailable",
}


def _unreachable(rec: Record, m: re.Match[str]) -> Built:
    return ApiUnreachable, error_fields(m.group(1))


def _server_error(rec: Record, m: re.Match[str]) -> Built:
    body = (m.group(2) or "").strip()
    return ApiError, {
        "status": m.group(1),
        "messages": (body,) if body else (),
        **error_fields(body),
    }


def _other_error(rec: Record, m: re.Match[str]) -> Built:
    return ApiError, {"messages": (m.group(1),), **error_fields(m.group(1))}


def _chain(rec: Record, m: re.Match[str]) -> Built:
    causes = tuple(c.group(1) for c in map(_CAUSE.match, rec.continuation) if c)
    debug = next((c[len("Debug Info: ") :] for c in rec.continuation if c.startswith("Debug")), "")
    text = " ".join((*causes, debug))
    status = _STATUS.search(text) or _RESPONSE.search(debug)
    if status is None and _UNREACHABLE.search(text):
        return ApiUnreachable, error_fields(text)
    return ApiError, {
        "status": status.group(1) if status else None,
        "messages": causes,
        **error_fields(debug or text),
    }


def _http_client(rec: Record, m: re.Match[str]) -> Built:
    text = m.group(1)
    if "Socket(" in text or "Connect" in text:
        return ApiUnreachable, error_fields(text)
    status = _RESPONSE.search(text)
    return ApiError, {"status": status.group(1) if status else None, **error_fields(text)}


def _device_added(rec: Record, m: re.Match[str]) -> Built:
    return DeviceAdded, {"device_id": m.group(1), "bdf": m.group(2)}


def _old_status(rec: Record, m: re.Match[str]) -> Built:
    return ApiError, {
        "status": _HTTP_STATUS.get(m.group(1), m.group(1)),
        "messages": (m.group(2),),
        **error_fields(m.group(2)),
    }


PATTERNS: list[Pattern] = [
    # ch-remote <= v46, and newer ones logging through env_logger ([... ERROR ch_remote] ...)
    (re.compile(r"^(?:Error running command: )?Error opening HTTP socket: (.*)"), _unreachable),
    (
        re.compile(r"^Error running command: Server responded with an error: (\w+)(?::\s*(.*))?"),
        _server_error,
    ),
    (re.compile(r"^Error running command: (.*)"), _other_error),
    (re.compile(r"^Error: ch-remote exited with the following chain of errors"), _chain),
    (re.compile(r"^(?:ch-remote: )?Error: (HttpApiClient\(.*)"), _http_client),
    (re.compile(r'^\{"id":"([^"]+)","bdf":"([^"]+)"\}\s*$'), _device_added),
    # ch-remote of 2019-2020 (v0.x): "error: 500  reason: VmBoot(...): unknown."
    (re.compile(r"^error: ([1-5]\d\d) +reason: (.*)"), _old_status),
]
