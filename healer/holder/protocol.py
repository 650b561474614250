"""The holder's control protocol: one orjson object per ``SOCK_SEQPACKET`` datagram.

Both sides import this module, so the brain and the holder agree on every field by
construction. The socket keeps message boundaries, so there is no length prefix to get
wrong, and descriptors travel as SCM_RIGHTS with the message they belong to. Decoding
checks every field (one rule per field name or declared type, in ``_RULES``): the holder
must answer a malformed message with an error, never fall over it. Requests carry
``id`` (>= 1) and ``op``; replies the same ``id``, ``ok`` and ``op`` (their kind); notices
from the holder ``op`` only. A reply with ``id`` 0 answers no request: the holder refuses
the connection itself (busy, not allowed).
"""

from __future__ import annotations

import array
import dataclasses
import math
import re
import socket
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar, Self, TypeAlias

import orjson

from healer.unixsock import SUN_PATH_MAX

PROTOCOL = 1
MAX_MESSAGE = 256 * 1024  # bytes; a longer datagram arrives cut (flagged) and is refused
MAX_FDS = 253  # the kernel's SCM_MAX_FD: descriptors in one message
MAX_SHARES = MAX_FDS  # so that every listener fits the one ``state`` reply to ``hello``
STOP_GRACE_S = 5.0  # SIGTERM to SIGKILL when the holder stops a daemon (release, shutdown)
KILL_WAIT_S = 2.0  # how long the holder waits for a SIGKILLed daemon to be gone
SHARE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a file name part and an FDNAME
_MAX_INT = 2**63 - 1
_MAX_TEXT = 16 * 1024
_PEEK_ID = re.compile(rb'\s*\{\s*"id"\s*:\s*(\d{1,18})[\s,}]')


class ProtocolError(ValueError):
    """A message that cannot be used; ``id`` is the request's, when it could be read."""

    def __init__(self, reason: str, id: int | None = None) -> None:
        super().__init__(reason)
        self.id = id


@dataclass(frozen=True, slots=True)
class _Fields:
    """One decoded object being read; every error names the op and the field."""

    op: str
    obj: Mapping[str, object]
    id: int | None


Reader: TypeAlias = Callable[[_Fields, str], object]


def _check(
    ok: Callable[[object], bool], wanted: str, convert: Callable[[object], object] | None = None
) -> Reader:
    """A reader of the values ``ok`` accepts, turned into their field type by ``convert``."""

    def read(f: _Fields, key: str) -> object:
        value = f.obj.get(key)
        if not ok(value):
            raise ProtocolError(f"{f.op}: {key!r} must be {wanted}", f.id)
        return value if convert is None else convert(value)

    return read


def _integer(low: int = 0, high: int = _MAX_INT) -> Reader:
    return _check(lambda v: type(v) is int and low <= v <= high, f"an integer in [{low}, {high}]")


def _optional(read: Reader) -> Reader:
    return lambda f, key: None if f.obj.get(key) is None else read(f, key)


def _is_text(v: object) -> bool:
    return isinstance(v, str) and len(v) <= _MAX_TEXT and "\0" not in v


def _is_path(v: object) -> bool:
    return isinstance(v, str) and _is_text(v) and v[:1] == "/" and len(v.encode()) <= SUN_PATH_MAX


def _is_env(v: object) -> bool:
    return v is None or (
        isinstance(v, dict)
        and all(_is_text(k) and k and "=" not in k and _is_text(x) for k, x in v.items())
    )


def _records(kind: type[_Record], *, one: bool = False) -> Reader:
    """Nested records: a list of objects, or with ``one`` a single object."""

    def read(f: _Fields, key: str) -> object:
        value = f.obj.get(key)
        items = [value] if one else value
        if not isinstance(items, list) or not all(isinstance(v, dict) for v in items):
            raise ProtocolError(f"{f.op}: {key!r} must be {'an object' if one else 'a list'}", f.id)
        got = tuple(kind.read(_Fields(f"{f.op}.{key}", v, f.id)) for v in items)
        return got[0] if one else got

    return read


_text = _check(_is_text, f"a string of at most {_MAX_TEXT} characters without NUL")
_RULES: dict[str, Reader] = {  # by field name first, then by declared type (see _spec)
    "share": _check(
        lambda v: isinstance(v, str) and SHARE_NAME.fullmatch(v) is not None,
        f"a share name matching {SHARE_NAME.pattern}",
    ),
    "path": _check(_is_path, f"an absolute path of at most {SUN_PATH_MAX} bytes"),
    "generation": _integer(1),
    "pid": _integer(1),
    "holder_pid": _integer(1),
    "signum": _integer(1, 64),
    "backlog": _integer(1, 65535),
    "argv": _check(
        lambda v: isinstance(v, list) and bool(v) and all(map(_is_text, v)) and bool(v[0]),
        "a non-empty list of strings, a program first",
        lambda v: tuple(v) if isinstance(v, list) else v,
    ),
    "env": _check(
        _is_env,
        "an object of NAME: value strings",
        lambda v: tuple(v.items()) if isinstance(v, dict) else v,
    ),
    "int": _integer(),
    "int | None": _optional(_integer()),
    "float": _check(
        lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
        "a finite number",
        lambda v: float(v) if isinstance(v, int) else v,
    ),
    "bool": _check(lambda v: type(v) is bool, "true or false"),
    "str": _text,
    "str | None": _optional(_text),
}
_RULES["name"], _RULES["socket"] = _RULES["share"], _RULES["path"]


class _Record:
    """Generic ``fields()`` and ``read()`` from the dataclass fields and ``_RULES``."""

    __slots__ = ()
    __dataclass_fields__: ClassVar[dict[str, dataclasses.Field[object]]]

    def fields(self) -> dict[str, object]:
        return {name: _dump(name, getattr(self, name)) for name, _ in _spec(type(self))}

    @classmethod
    def read(cls, f: _Fields) -> Self:
        return cls(*(read(f, name) for name, read in _spec(cls)))


def _dump(name: str, value: object) -> object:
    if isinstance(value, _Record):
        return value.fields()
    if isinstance(value, tuple):
        return dict(value) if name == "env" else [_dump(name, v) for v in value]
    return value


class _Message(_Record):
    """What every message kind has: its ``op``, ``encode()`` and ``from_fields()``."""

    __slots__ = ()
    OP: ClassVar[str]
    OK: ClassVar[bool | None] = None  # replies say True or False

    def __init_subclass__(cls, op: str = "", ok: bool | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if op:
            cls.OP = op
        if ok is not None:
            cls.OK = ok

    def fields(self) -> dict[str, object]:
        body = _Record.fields(self)
        head: dict[str, object] = {"id": body.pop("id")} if "id" in body else {}
        if self.OK is not None:
            head["ok"] = self.OK
        return head | {"op": self.OP} | body

    def encode(self) -> bytes:
        data = orjson.dumps(self.fields())
        if len(data) > MAX_MESSAGE:
            raise ProtocolError(f"{self.OP}: {len(data)} bytes is over the limit of {MAX_MESSAGE}")
        return data

    @classmethod
    def from_fields(cls, obj: Mapping[str, object]) -> Self:
        """This kind of message from its ``fields()``, checked as :func:`decode` checks."""
        return cls.read(_Fields(cls.OP, obj, None))


class _Reply(_Message):
    __slots__ = ()
    OK: ClassVar[bool | None] = True


@dataclass(frozen=True, slots=True)
class DaemonState(_Record):
    """A running daemon; ``adopted``: found after a holder restart, not the holder's
    child, so its exit status will be unknown."""

    generation: int
    pid: int
    started_at: float
    adopted: bool


@dataclass(frozen=True, slots=True)
class ShareState(_Record):
    """A share the holder keeps. ``inode``: of the socket file when it was bound (kept
    across holder restarts); ``has_listener``: the holder holds that listener now, and its
    descriptor comes with the ``state`` reply."""

    name: str
    socket: str
    inode: int | None
    has_listener: bool
    daemon: DaemonState | None


@dataclass(frozen=True, slots=True)
class Hello(_Message, op="hello"):
    """The first request on a connection: answered by a `StateReply`."""

    id: int
    protocol: int
    brain_pid: int


@dataclass(frozen=True, slots=True)
class Listen(_Message, op="listen"):
    """Hold a listener for ``share`` at ``path`` (the brain's copy may come attached)."""

    id: int
    share: str
    path: str
    backlog: int


@dataclass(frozen=True, slots=True)
class Spawn(_Message, op="spawn"):
    """Start that generation of the share's daemon; ``{fd}`` in argv is the listener's
    descriptor number; ``env`` is added to the holder's environment."""

    id: int
    share: str
    generation: int
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True, slots=True)
class Signal(_Message, op="signal"):
    """Send ``signum`` to the running daemon of that generation."""

    id: int
    share: str
    generation: int
    signum: int


@dataclass(frozen=True, slots=True)
class Ack(_Message, op="ack"):
    """The brain has recorded the exit of that generation: the holder forgets it."""

    id: int
    share: str
    generation: int


@dataclass(frozen=True, slots=True)
class Release(_Message, op="release"):
    """Stop the share's daemon, close and unlink its listener, forget the share."""

    id: int
    share: str


@dataclass(frozen=True, slots=True)
class Shutdown(_Message, op="shutdown"):
    """Release every share and exit 0."""

    id: int


@dataclass(frozen=True, slots=True)
class Reexec(_Message, op="reexec"):
    """Replace the holder's image in place (same pid: children and descriptors stay)."""

    id: int


@dataclass(frozen=True, slots=True)
class Done(_Reply, op="done"):
    """The request was carried out; it has no result."""

    id: int


@dataclass(frozen=True, slots=True)
class Failed(_Reply, op="error", ok=False):
    """The request was refused or failed; ``error`` is a one-line reason."""

    id: int
    error: str


@dataclass(frozen=True, slots=True)
class Listening(_Reply, op="listening"):
    """The share's listener (its descriptor attached) and its socket file's inode."""

    id: int
    share: str
    inode: int


@dataclass(frozen=True, slots=True)
class Spawned(_Reply, op="spawned"):
    """The daemon runs; ``stderr_path`` is the file that is its stderr and stdout."""

    id: int
    share: str
    generation: int
    pid: int
    started_at: float
    stderr_path: str


@dataclass(frozen=True, slots=True)
class Exited(_Message, op="exited"):
    """A daemon ended (a notice, no id). ``code``: its exit status, or ``signal`` (e.g.
    ``SIGKILL``) if killed; both None and ``known`` False if it was not the holder's child."""

    share: str
    generation: int
    pid: int
    code: int | None
    signal: str | None
    at: float
    known: bool


@dataclass(frozen=True, slots=True)
class HolderState(_Record):
    """What the holder keeps, as ``hello`` reports it; ``reexecs`` counts in-place
    upgrades of this process (``started_at`` is its start, kept across them)."""

    holder_pid: int
    protocol: int
    started_at: float
    reexecs: int
    shares: tuple[ShareState, ...]
    exits: tuple[Exited, ...]

    def share(self, name: str) -> ShareState | None:
        return next((s for s in self.shares if s.name == name), None)


@dataclass(frozen=True, slots=True)
class StateReply(_Reply, op="state"):
    """The answer to `Hello`; the listeners of the shares with ``has_listener`` come
    attached, in the order of ``state.shares``."""

    id: int
    state: HolderState


Request: TypeAlias = Hello | Listen | Spawn | Signal | Ack | Release | Shutdown | Reexec
Reply: TypeAlias = Done | Failed | Listening | Spawned | StateReply
Message: TypeAlias = Request | Reply | Exited
REQUESTS = (Hello, Listen, Spawn, Signal, Ack, Release, Shutdown, Reexec)
KINDS: tuple[type[Message], ...] = (*REQUESTS, Done, Failed, Listening, Spawned, StateReply, Exited)
_BY_OP = {kind.OP: kind for kind in KINDS}
_RULES["DaemonState | None"] = _optional(_records(DaemonState, one=True))
_RULES["HolderState"] = _records(HolderState, one=True)
_RULES["tuple[ShareState, ...]"] = _records(ShareState)
_RULES["tuple[Exited, ...]"] = _records(Exited)
_SPECS: dict[type[_Record], tuple[tuple[str, Reader], ...]] = {}


def _spec(kind: type[_Record]) -> tuple[tuple[str, Reader], ...]:
    """Each field of ``kind`` with its reader: by name first, then by declared type."""
    spec = _SPECS.get(kind)
    if spec is None:
        first = _integer(1) if kind in REQUESTS else _integer(0)
        spec = _SPECS[kind] = tuple(
            (f.name, first if f.name == "id" else _RULES.get(f.name) or _RULES[str(f.type)])
            for f in dataclasses.fields(kind)
        )
    return spec


def peek_id(data: bytes) -> int | None:
    """The ``id`` at the start of a message that cannot be decoded (cut, or not JSON)."""
    m = _PEEK_ID.match(data[:64])
    return int(m.group(1)) if m else None


def decode(data: bytes) -> Message:
    """One message from one datagram; ProtocolError (with the id if readable) otherwise."""
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"a message of over {MAX_MESSAGE} bytes", peek_id(data))
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"not JSON: {exc}"[:200], peek_id(data)) from None
    if type(obj) is not dict:
        raise ProtocolError("not a JSON object")
    raw = obj.get("id")
    id = raw if type(raw) is int and 0 <= raw <= _MAX_INT else None
    op = obj.get("op")
    kind = _BY_OP.get(op) if type(op) is str else None
    if kind is None:
        raise ProtocolError(f"unknown op {op!r}"[:200], id)
    return kind.read(_Fields(kind.OP, obj, id))


def configure(sock: socket.socket) -> None:
    """Let one datagram of MAX_MESSAGE through (the default send buffer holds ~208 KiB)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, MAX_MESSAGE + 64 * 1024)


def send(sock: socket.socket, message: Message, fds: Sequence[int] = ()) -> None:
    """One message, with ``fds`` as SCM_RIGHTS; a broken peer is an OSError, not SIGPIPE."""
    data = message.encode()
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    sock.sendmsg([data], rights, socket.MSG_NOSIGNAL)


_ANCILLARY = socket.CMSG_SPACE(MAX_FDS * 4)


def receive(sock: socket.socket, buffer: bytearray) -> tuple[bytes, list[int]] | None:
    """One datagram and its descriptors (close-on-exec), None at end of stream.

    ``buffer`` holds MAX_MESSAGE bytes: a longer message arrives cut, flagged by the
    kernel, and is refused here (its descriptors are closed).
    """
    size, ancillary, flags, _ = sock.recvmsg_into([buffer], _ANCILLARY, socket.MSG_CMSG_CLOEXEC)
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    data = bytes(buffer[:size])
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            socket.close(fd)
        what = "bytes" if flags & socket.MSG_TRUNC else "descriptors"
        raise ProtocolError(f"a message with more than the limit of {what}", peek_id(data))
    if size == 0 and not fds:
        return None
    return data, list(fds)
