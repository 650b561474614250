"""Supervisors that report a virtiofsd exit: supervisord, systemd, kata, shell loops.

Only programs whose name mentions virtiofs count: supervisord and systemd report every
child they run.
"""

from __future__ import annotations

import re

from healer.events import VirtiofsdExited
from healer.parse.patterns import Built, Pattern
from healer.parse.record import Record

__all__ = ["KEYWORDS", "PATTERNS", "PROGRAM"]

PROGRAM: str | None = None
"""Who prints the messages below when the line itself does not say."""

# Literal needles for the prefilter (see cloud_hypervisor.KEYWORDS).
KEYWORDS = (
    "exited: ",
    "stopped: ",
    "Main process exited",
    "virtiofsd exited",
    "restarting virtiofsd",
    'msg="The virtiofsd had stopped',
    'msg=\\"The virtiofsd had stopped',
    'msg="virtiofsd quits',
    'msg=\\"virtiofsd quits',
)


def _supervisord(rec: Record, m: re.Match[str]) -> Built:
    name = m.group("name")
    if "virtiofs" not in name:
        return None
    expected = m.group("exp")
    return VirtiofsdExited, {
        "name": name,
        "status": int(m.group("status")) if m.group("status") else None,
        "signal": m.group("sig"),
        "expected": None if expected is None else expected == "expected",
        "reporter": "supervisord",
    }


def _systemd(rec: Record, m: re.Match[str]) -> Built:
    unit, code, status = m.group(1), m.group(2), m.group(3)
    if "virtiofs" not in unit:
        return None
    killed = code in ("killed", "dumped")
    return VirtiofsdExited, {
        "name": unit,
        "status": None if killed else int(status),
        "signal": f"SIG{m.group(4)}" if killed else None,
        "reporter": "systemd",
    }


def _script(rec: Record, m: re.Match[str]) -> Built:
    status = m.group(1)
    return VirtiofsdExited, {
        "name": "virtiofsd",
        "status": int(status) if status else None,
        "reporter": "script",
    }


def _kata(rec: Record, m: re.Match[str]) -> Built:
    return VirtiofsdExited, {"name": "virtiofsd", "reporter": "kata"}


PATTERNS: list[Pattern] = [
    (
        re.compile(
            r"(?:exited|stopped): (?P<name>\S+) \((?:exit status (?P<status>\d+)"
            r"(?:; (?P<exp>not expected|expected))?|terminated by (?P<sig>SIG\w+)[^)]*)\)"
        ),
        _supervisord,
    ),
    (
        re.compile(
            r"(?<!\S)(\S+?)(?:\.service)?: Main process exited, code=(\w+), status=(\d+)/(\w+)"
        ),
        _systemd,
    ),
    (re.compile(r"virtiofsd exited(?: with (?:status|code) (\d+))?|restarting virtiofsd"), _script),
    # kata's own record (its msg, or logfmt msg="..." still in the line), not prose
    (re.compile(r'(?:^|msg=\\?")(?:The virtiofsd had stopped|virtiofsd quits)'), _kata),
]
