"""Peel the wrappers real deployments put around log lines.

Seen in the wild, in any nesting: a CI runner timestamp (``...Z # ``), docker/RFC 3339
prefixes, the user's vm.sh ``YYYYMMDDTHH:MM `` prefix, journald/syslog headers
(including the doubled header of syslog 6.x under journald, and a header whose first
letter was lost), kata logfmt records that carry a console line in ``vmconsole="..."``,
and supervisord's own ``YYYY-MM-DD HH:MM:SS,mmm LEVEL`` lines. What is left is the
payload a program wrote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from healer.eventtime import parse_compact_minute, parse_iso, parse_syslog

__all__ = ["Envelope", "peel"]

_MAX_LAYERS = 6

_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)) (?:# )?")
_COMPACT = re.compile(r"(\d{8}T\d\d:\d\d) ")
_SYSLOG = re.compile(
    r"(?:<\d{1,3}>)?([A-Za-z]{2,3}) ([ \d]?\d) (\d\d:\d\d:\d\d) (\S+) ([^\s\[\]:]+)(?:\[(\d+)\])?: "
)
# journald view of a --syslog daemon, or syslog 6.x repeating its header inside the message.
_PROGRAM_PID = re.compile(r"(?:(\S+) )?([A-Za-z][\w.@-]*)\[(\d+)\]: ")
_KATA = re.compile(r'time="([^"]+)" level=(\w+) ')
_KATA_FIELD = re.compile(r'\b(msg|vmconsole)="((?:[^"\\]|\\.)*)"?')
_SUPERVISORD = re.compile(
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (CRIT|ERRO|WARN|INFO|DEBG|TRAC|BLAT) "
)
_SUPERVISORD_LEVEL = {
    "CRIT": "ERROR",
    "ERRO": "ERROR",
    "WARN": "WARN",
    "INFO": "INFO",
    "DEBG": "DEBUG",
    "TRAC": "TRACE",
    "BLAT": "TRACE",
}
_KATA_LEVEL = {"error": "ERROR", "warning": "WARN", "info": "INFO", "debug": "DEBUG"}


@dataclass(slots=True)
class Envelope:
    """The payload of a line and what its wrappers said about it."""

    payload: str
    wall: datetime | None = None
    precise: bool = False
    program: str | None = None
    pid: int | None = None
    level: str | None = None
    wrappers: tuple[str, ...] = ()
    guest: bool = False  # the payload is the guest's console (Kata vmconsole)


def peel(line: str, year: int) -> Envelope:
    """Strip every wrapper from ``line``; ``year`` completes syslog headers."""
    env = Envelope(line)
    layers: list[str] = []
    for _ in range(_MAX_LAYERS):
        text = env.payload
        if not text:
            break
        first = text[0]
        if first.isdigit() and _peel_timestamp(env, text, layers):
            continue
        if first.isalpha() or first == "<":
            if text.startswith('time="') and _peel_kata(env, text, layers):
                continue
            if _peel_syslog(env, text, year, layers):
                continue
        break
    env.wrappers = tuple(layers)
    return env


def _set_wall(env: Envelope, wall: datetime | None, precise: bool) -> None:
    # The outermost precise stamp wins: it is when the line was written.
    if wall is None or (env.wall is not None and (env.precise or not precise)):
        return
    env.wall, env.precise = wall, precise


def _peel_timestamp(env: Envelope, text: str, layers: list[str]) -> bool:
    m = _RFC3339.match(text)
    if m:
        _set_wall(env, parse_iso(m.group(1)), True)
        env.payload = text[m.end() :]
        layers.append("rfc3339")
        return True
    m = _COMPACT.match(text)
    if m:
        _set_wall(env, parse_compact_minute(m.group(1)), False)
        env.payload = text[m.end() :]
        layers.append("vm.sh")
        return True
    m = _SUPERVISORD.match(text)
    if m:
        _set_wall(env, parse_iso(f"{m.group(1)}.{m.group(2)}"), True)
        env.program = "supervisord"
        env.level = _SUPERVISORD_LEVEL[m.group(3)]
        env.payload = text[m.end() :]
        layers.append("supervisord")
        return True
    return False


def _peel_syslog(env: Envelope, text: str, year: int, layers: list[str]) -> bool:
    m = _SYSLOG.match(text)
    if m:
        month, day, clock, _host, program, pid = m.groups()
        _set_wall(env, parse_syslog(month, day.strip(), clock, year), True)
        env.program = program
        env.pid = int(pid) if pid else None
        env.payload = text[m.end() :]
        layers.append("syslog")
        return True
    m = _PROGRAM_PID.match(text)
    if m and (env.program is None or m.group(2) == env.program):
        env.program = m.group(2)
        env.pid = int(m.group(3))
        env.payload = text[m.end() :]
        layers.append("syslog-tag")
        return True
    return False


def _peel_kata(env: Envelope, text: str, layers: list[str]) -> bool:
    m = _KATA.match(text)
    if m is None:
        return False
    fields = dict(_KATA_FIELD.findall(text, m.end()))
    inner = fields.get("vmconsole")
    _set_wall(env, parse_iso(m.group(1)), True)
    if inner is not None:
        env.payload = _unescape(inner)
        env.guest = True
    else:
        env.payload = _unescape(fields.get("msg", ""))
        env.program = "kata"
        env.level = _KATA_LEVEL.get(m.group(2).lower())
    layers.append("kata")
    return True


def _unescape(value: str) -> str:
    return value.replace('\\"', '"').replace("\\\\", "\\")
