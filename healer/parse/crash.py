"""A virtiofsd crash as the kernel and systemd-coredump report it.

One crash is several lines: the kernel's ``segfault at`` (or an audit record when its
seccomp filter killed it), then systemd-coredump's ``dumped core``. Each is read as a
``VirtiofsdExited`` with its reporter; only processes whose name starts with
``virtiofsd`` count (the kernel cuts names to 15 characters: ``virtiofsd-x86_6``).
"""

from __future__ import annotations

import re

from healer.events import VirtiofsdExited
from healer.parse.patterns import Built, Pattern, signal_name
from healer.parse.record import Record

__all__ = ["KEYWORDS", "PATTERNS", "PROGRAM"]

PROGRAM: str | None = None
"""Who prints the messages below when the line itself does not say."""

# Literal needles for the prefilter (see cloud_hypervisor.KEYWORDS).
KEYWORDS = ("]: segfault at ", "ANOM_ABEND ", "SECCOMP ", ") of user ")

_COMM = re.compile(r'\bcomm="([^"]{1,64})"')
_SIG = re.compile(r"\bsig=(\d{1,3})\b")


def _segfault(rec: Record, m: re.Match[str]) -> Built:
    if not m.group(1).startswith("virtiofsd"):
        return None
    return VirtiofsdExited, {"name": m.group(1), "signal": "SIGSEGV", "reporter": "kernel"}


def _audit(rec: Record, m: re.Match[str]) -> Built:
    """An audit record of an abnormal end (or a seccomp kill: ``sig`` not 0)."""
    text = rec.full_message()
    comm, sig = _COMM.search(text), _SIG.search(text)
    if comm is None or not comm.group(1).startswith("virtiofsd") or sig is None:
        return None
    if sig.group(1) == "0":
        return None  # a seccomp rule that only logs
    name = signal_name(int(sig.group(1)))
    return VirtiofsdExited, {"name": comm.group(1), "signal": name, "reporter": "kernel"}


def _core(rec: Record, m: re.Match[str]) -> Built:
    if not m.group(1).startswith("virtiofsd"):
        return None
    return VirtiofsdExited, {"name": m.group(1), "reporter": "systemd-coredump"}


PATTERNS: list[Pattern] = [
    (re.compile(r"(\S{1,64})\[\d{1,10}\]: segfault at "), _segfault),
    (re.compile(r"\b(?:ANOM_ABEND|SECCOMP) "), _audit),
    (re.compile(r"Process \d{1,10} \(([^)]{1,64})\) of user \d{1,10} dumped core"), _core),
]
