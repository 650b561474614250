"""Peel the wrappers real deployments put around log lines.

Seen in the wild, in any nesting: a CI runner timestamp (``...Z # ``), docker/RFC 3339
prefixes, the user's vm.sh ``YYYYMMDDTHH:MM `` prefix, journald/syslog headers
(including the doubled header of syslog 6.x under journald, and a header whose first
letter was lost), kata logfmt records that carry a console line in ``vmconsole="..."``,
supervisord's own ``YYYY-MM-DD HH:MM:SS,mmm LEVEL`` lines, and a structured logger's
one-line JSON record (kubevirt's virt-launcher, Kata's runtime-rs: ``{"msg": ...,
"timestamp": ...}``). What is left is the payload a program wrote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import orjson

from healer.eventtime import parse_compact_minute, parse_iso, parse_syslog

__all__ = ["Envelope", "peel"]

_MAX_LAYERS = 6
_ANSI = re.compile(r"\x1b\[[0-9;]{0,32}m")
# markdown or mail quoting, a shell prompt, an opening backtick
_QUOTED = re.compile(r"(?:> ?){0,8}(?:\$ )?`{0,3}")

_RFC3339 = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:?\d\d)) (?:# )?")
_COMPACT = re.compile(r"(\d{8}T\d\d:\d\d) ")
_SYSLOG = re.compile(
    r"(?:<\d{1,3}>)?([A-Za-z]{2,3}) ([ \d]?\d) (\d\d:\d\d:\d\d) (\S+) ([^\s\[\]:]+)(?:\[(\d+)\])?: "
)
# journald view of a --syslog daemon, or syslog 6.x repeating its header inside the message.
_PROGRAM_PID = re.compile(r"(?:(\S+) )?([A-Za-z][\w.@-]*)\[(\d+)\]: ")
_KATA = re.compile(r'time="([^"]+)" level=(\w+) ')
_ZONE = re.compile(r"(?:Z|[+-]\d\d:?\d\d)$")
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
_JSON_MESSAGE = ("msg", "message")
_JSON_TIME = ("timestamp", "time", "ts")
_ISO_ZONED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)")


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
    zoned: bool = False  # ``wall`` came from a stamp with its year and zone
    header: datetime | None = None  # the zone-less header's stamp, read as UTC
    header_kind: str | None = None  # its wrapper: ``syslog``, ``vm.sh``, ``supervisord``


def peel(line: str, year: int) -> Envelope:
    """Strip every wrapper from ``line``; ``year`` completes syslog headers."""
    layers: list[str] = []
    if "\x1b" in line:  # colour codes of a terminal the log was copied from
        line = _ANSI.sub("", line)
        layers.append("ansi")
    env = Envelope(line)
    quoted = _QUOTED.match(line)
    if quoted is not None and quoted.end():  # what a reporter put in front: >, $ or `
        env.payload = line[quoted.end() :]
        layers.append("quoted")
    for _ in range(_MAX_LAYERS):
        text = env.payload
        if not text:
            break
        first = text[0]
        if first.isdigit() and _peel_timestamp(env, text, layers):
            continue
        if first == "{" and text.startswith('{"') and _peel_json(env, text, layers):
            continue
        if first.isalpha() or first == "<":
            if text.startswith('time="') and _peel_kata(env, text, layers):
                continue
            if _peel_syslog(env, text, year, layers):
                continue
        break
    env.wrappers = tuple(layers)
    return env


def _set_wall(
    env: Envelope, wall: datetime | None, precise: bool, *, zoned: bool, header: str = ""
) -> None:
    """The outermost precise stamp wins: it is when the line was written. But a header
    without zone or year (syslog, journald's short format, supervisord) is a guess at
    both, so a stamp inside the same record that has them (kata's ``time=``, docker's)
    is the truer clock: the reporter's local time and a missing year are gone with it,
    and its fraction is kept."""
    if wall is None:
        return
    if header and env.header is None:  # kept to learn its zone (healer/parse/zone.py)
        env.header, env.header_kind = wall, header
    if env.wall is not None and not (zoned and not env.zoned) and (env.precise or not precise):
        return
    env.wall, env.precise, env.zoned = wall, precise, zoned


def _peel_timestamp(env: Envelope, text: str, layers: list[str]) -> bool:
    m = _RFC3339.match(text)
    if m:
        _set_wall(env, parse_iso(m.group(1)), True, zoned=True)
        env.payload = text[m.end() :]
        layers.append("rfc3339")
        return True
    m = _COMPACT.match(text)
    if m:
        _set_wall(env, parse_compact_minute(m.group(1)), False, zoned=False, header="vm.sh")
        env.payload = text[m.end() :]
        layers.append("vm.sh")
        return True
    m = _SUPERVISORD.match(text)
    if m:
        wall = parse_iso(f"{m.group(1)}.{m.group(2)}")
        _set_wall(env, wall, True, zoned=False, header="supervisord")
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
        wall = parse_syslog(month, day.strip(), clock, year)
        _set_wall(env, wall, True, zoned=False, header="syslog")
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
    stamp = m.group(1)
    _set_wall(env, parse_iso(stamp), True, zoned=_ZONE.search(stamp) is not None)
    if inner is not None:
        env.payload = _unescape(inner)
        env.guest = True
    else:
        env.payload = _unescape(fields.get("msg", ""))
        env.program = "kata"
        env.level = _KATA_LEVEL.get(m.group(2).lower())
    layers.append("kata")
    return True


def _peel_json(env: Envelope, text: str, layers: list[str]) -> bool:
    """A one-line JSON record with a string message: its message is the payload, its
    zoned stamp the time (QEMU's own stamp inside it is the relayed text's)."""
    if not text.rstrip().endswith("}"):
        return False
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    if not isinstance(record, dict):
        return False
    message = next((record[k] for k in _JSON_MESSAGE if isinstance(record.get(k), str)), None)
    if message is None:
        return False
    for key in _JSON_TIME:
        stamp = record.get(key)
        if isinstance(stamp, str) and _ISO_ZONED.fullmatch(stamp):
            _set_wall(env, parse_iso(stamp), True, zoned=True)
            break
    level = record.get("level")
    if isinstance(level, str):
        env.level = _KATA_LEVEL.get(level.lower(), env.level)
    env.payload = message
    layers.append("json")
    return True


def _unescape(value: str) -> str:
    return value.replace('\\"', '"').replace("\\\\", "\\")
