"""What can go wrong talking to cloud-hypervisor, and how to read its error bodies.

CH's error body changed shape three times (ch-api.md §4): the Rust Debug text of the
error up to v37, its Display text in v38-v46, and from v47 a JSON list with the
Display text of every error in the chain, top first. Some answers have no body at
all. :func:`error_messages` turns each into a tuple of strings, and the predicates on
:class:`ChApiError` match substrings that survive all three shapes.
"""

from __future__ import annotations

from typing import Any

import orjson

from healer.errors import HealerError

__all__ = [
    "STATUS_CODES",
    "ChApiError",
    "ChError",
    "ChTimeout",
    "ChUnreachable",
    "error_messages",
]

STATUS_CODES = {
    "Continue": 100,
    "Ok": 200,
    "OK": 200,
    "NoContent": 204,
    "BadRequest": 400,
    "NotFound": 404,
    "MethodNotAllowed": 405,
    "Conflict": 409,
    "TooManyRequests": 429,
    "InternalServerError": 500,
    "NotImplemented": 501,
}
"""Rust ``StatusCode`` Debug names (as ch-remote prints them) to HTTP status codes."""

# Substrings of each condition in the Debug (<= v37), Display (v38-v46) and
# JSON-list (v47+) bodies.
_NOT_UNIQUE = ("IdentifierNotUnique", "is not unique")
_NO_DEVICE = (
    "UnknownDeviceId",
    "NoDeviceToRemove",
    "Failed to find device corresponding to the given identifier",
    "No device to remove",
)
_BACKEND = ("VhostUserConnect", "Connection to socket failed")


class ChError(HealerError):
    """Base of every error talking to cloud-hypervisor (API socket or ch-remote)."""


class ChUnreachable(ChError):
    """Nobody answers on the API socket: missing file, refused, or closed unanswered.

    A refused connect on an existing socket file means the CH process is gone (the
    file stays behind); ``errno`` tells the cases apart.
    """

    def __init__(self, target: str, reason: str, *, errno: int | None = None) -> None:
        self.target = target
        self.reason = reason
        self.errno = errno
        super().__init__(f"cloud-hypervisor at {target} is unreachable: {reason}")


class ChTimeout(ChError):
    """No complete answer within the timeout: CH may be in its 60 s connect loop."""

    def __init__(self, target: str, what: str, timeout_s: float) -> None:
        self.target = target
        self.what = what
        self.timeout_s = timeout_s
        super().__init__(f"{what} on {target}: no answer within {timeout_s:g} s")


class ChApiError(ChError):
    """CH answered with an error status; ``messages`` are the body's items."""

    def __init__(self, status: int | None, messages: tuple[str, ...], raw_body: str) -> None:
        self.status = status
        self.messages = messages
        self.raw_body = raw_body
        shown = ": ".join(messages) if messages else "(no body)"
        super().__init__(f"cloud-hypervisor answered {status or 'an error'}: {shown}")

    def _says(self, needles: tuple[str, ...]) -> bool:
        text = "\n".join((self.raw_body, *self.messages))
        return any(n in text for n in needles)

    @property
    def not_unique(self) -> bool:
        """The id is still taken (issue #8763: removed, not yet ejected)."""
        return self._says(_NOT_UNIQUE)

    @property
    def no_such_device(self) -> bool:
        """remove-device named an id CH does not know (already gone)."""
        return self._says(_NO_DEVICE)

    @property
    def backend_unreachable(self) -> bool:
        """CH could not connect to the vhost-user socket (virtiofsd not listening)."""
        return self._says(_BACKEND)


def error_messages(body: bytes | str) -> tuple[str, ...]:
    """The messages of an error body of any CH version; ``()`` for an empty body."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    text = text.strip()
    if not text:
        return ()
    if text.startswith("["):
        try:
            items: Any = orjson.loads(text)
        except orjson.JSONDecodeError:
            return (text,)
        if isinstance(items, list) and all(isinstance(i, str) for i in items):
            return tuple(items)
    return (text,)
