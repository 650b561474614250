"""Turn Rust ``Debug`` error text into data: variant chain, io error kind, errno.

cloud-hypervisor and virtiofsd print errors with ``{:?}``, e.g.
``VhostUserProtocol(SocketConnect(Os { code: 111, kind: ConnectionRefused, ... }))``.
Rules match on ``chain``, ``error_kind`` and ``errno`` instead of substrings, so the
same rule works across versions that nest the variants differently.
The parser is total: any text gives a result, never an exception.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["ErrorDetail", "parse_error"]

MAX_TEXT = 4096
MAX_DEPTH = 64

# std::io::ErrorKind names for the errno values that matter around sockets and files.
ERRNO_KINDS: dict[int, str] = {
    1: "PermissionDenied",
    2: "NotFound",
    4: "Interrupted",
    11: "WouldBlock",
    12: "OutOfMemory",
    13: "PermissionDenied",
    16: "ResourceBusy",
    17: "AlreadyExists",
    20: "NotADirectory",
    21: "IsADirectory",
    22: "InvalidInput",
    28: "StorageFull",
    29: "NotSeekable",
    30: "ReadOnlyFilesystem",
    32: "BrokenPipe",
    98: "AddrInUse",
    99: "AddrNotAvailable",
    104: "ConnectionReset",
    107: "NotConnected",
    110: "TimedOut",
    111: "ConnectionRefused",
}

# strerror(3) texts as C programs print them (virtiofsd C, ch-remote's Display form).
STRERROR_KINDS: dict[str, tuple[str, int]] = {
    "connection refused": ("ConnectionRefused", 111),
    "no such file or directory": ("NotFound", 2),
    "broken pipe": ("BrokenPipe", 32),
    "permission denied": ("PermissionDenied", 13),
    "connection reset by peer": ("ConnectionReset", 104),
    "resource temporarily unavailable": ("WouldBlock", 11),
    "invalid argument": ("InvalidInput", 22),
    "address already in use": ("AddrInUse", 98),
    "operation not permitted": ("PermissionDenied", 1),
    "protocol error": ("Uncategorized", 71),  # EPROTO: Rust gives it no kind of its own
}

# io::Error representations: they carry kind/errno, they are not causes of their own.
_IO_REPR = frozenset({"Os", "Custom", "Simple", "SimpleMessage", "Kind"})
_TRANSPARENT = frozenset({"Some", "Ok", "Err", "Box", "Arc"})
_CAUSE_FIELDS = ("error", "source", "err", "cause", "inner")

_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"?'  # string (an unterminated one runs to the end)
    r"|[A-Za-z_][A-Za-z0-9_]*"  # identifier
    r"|-?\d+(?:\.\d+)?"  # number
    r"|\.\."  # struct rest
    r"|[(){}\[\],:]"  # punctuation
    r"|\S"  # anything else
)
_START = re.compile(r"\b[A-Z][A-Za-z0-9_]*\s?[({]")
_OS_ERROR = re.compile(r"\(os error (\d+)\)")
_STRERROR = re.compile("|".join(re.escape(k) for k in STRERROR_KINDS), re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """What an error text says, as fields: outermost variant first."""

    chain: tuple[str, ...] = ()
    error_kind: str | None = None
    errno: int | None = None


class _Walk:
    """A recursive-descent reader over the tokens of one Debug expression."""

    __slots__ = ("chain", "errno", "kind", "pos", "tokens")

    def __init__(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.chain: list[str] = []
        self.kind: str | None = None
        self.errno: int | None = None

    def peek(self) -> str:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ""

    def take(self) -> str:
        tok = self.peek()
        self.pos += 1
        return tok

    def value(self, depth: int, follow: bool) -> None:
        """Read one value; ``follow`` says whether it lies on the cause path."""
        if depth > MAX_DEPTH:
            self.pos = len(self.tokens)
            return
        tok = self.take()
        if not tok:
            return
        if tok in "([":
            self.skip_group(tok)
            return
        if not (tok[0].isalpha() or tok[0] == "_"):
            return
        nxt = self.peek()
        on_path = follow and tok not in _TRANSPARENT
        if on_path and tok[0].isupper() and tok not in _IO_REPR:
            self.chain.append(tok)
        if nxt == "(":
            self.take()
            self.tuple_args(depth, follow)
        elif nxt == "{":
            self.take()
            self.struct_fields(depth, follow)

    def tuple_args(self, depth: int, follow: bool) -> None:
        first = True
        while self.pos < len(self.tokens):
            if self.peek() == ")":
                self.take()
                return
            if self.peek() == ",":
                self.take()
                continue
            self.value(depth + 1, follow and first)
            first = False

    def struct_fields(self, depth: int, follow: bool) -> None:
        while self.pos < len(self.tokens):
            tok = self.take()
            if tok in ("}", ""):
                return
            if tok in (",", ".."):
                continue
            if self.peek() != ":":
                continue
            self.take()
            if tok == "code" and self.peek().lstrip("-").isdigit():
                self.errno = int(self.take())
            elif tok == "kind" and self.peek()[:1].isalpha():
                self.kind = self.take()
            else:
                self.value(depth + 1, follow and tok in _CAUSE_FIELDS)

    def skip_group(self, opener: str) -> None:
        closer = {"(": ")", "[": "]", "{": "}"}[opener]
        level = 1
        while self.pos < len(self.tokens) and level:
            tok = self.take()
            if tok == opener:
                level += 1
            elif tok == closer:
                level -= 1


def parse_error(text: str) -> ErrorDetail:
    """Read every top-level Debug expression in ``text`` and the ``(os error N)`` hints.

    Several expressions (a message continued on a second line) extend one chain.
    """
    text = text[:MAX_TEXT]
    chain: list[str] = []
    kind: str | None = None
    errno: int | None = None
    pos = 0
    while True:
        start = _START.search(text, pos)
        if start is None:
            break
        matches = list(_TOKEN.finditer(text, start.start()))
        walk = _Walk([m.group(0) for m in matches])
        walk.value(0, follow=True)
        chain.extend(walk.chain)
        kind = walk.kind or kind
        errno = walk.errno if walk.errno is not None else errno
        pos = max(start.end(), matches[min(walk.pos, len(matches)) - 1].end())
    if errno is None:
        os_error = _OS_ERROR.search(text)
        if os_error:
            errno = int(os_error.group(1))
    if kind is None and errno is not None:
        kind = ERRNO_KINDS.get(errno)
    if kind is None:
        message = _STRERROR.search(text)
        if message:
            kind, guessed = STRERROR_KINDS[message.group(0).lower()]
            errno = errno if errno is not None else guessed
    return ErrorDetail(tuple(chain), kind, errno)
