"""One fault, one event: a record that says again what an event just before it said.

Real logs tell one fault twice: journald holds a Kata record under the shim's name
and again under containerd's; a Python traceback ends with the error its dialog
line already gave; QEMU prints a failed device's prefix on a second line with the
errno; a burst of QEMU's vhost-user words is one lost session; cloud-hypervisor's
ACPI and i8042 handlers report one reset microseconds apart; the kernel, audit and
systemd-coredump each report one crash. Counted twice, such a
fault would be healed, counted and alerted on twice. The second record becomes a
:class:`Repeat` that cites the event it repeats; rules, metrics and the journal see
the event once, and a replay shows both lines.

Each test is about evidence the two records carry, never about closeness alone: a
daemon that dies twice in a second is two deaths.
"""

from __future__ import annotations

import dataclasses
import re
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from healer.events import BackendDisconnected, Event, VirtiofsdExited, VmmExited, VmReset

__all__ = ["RECENT", "RecentEvents", "Repeat", "repeat"]

RECENT = 16
"""Events of one source a new one is compared with."""
LINE_REACH = 64
"""Lines apart two records of one fault may be (a traceback, a QEMU burst)."""
TIME_REACH = 2.0
"""Seconds of event time apart two records of one fault may be."""
RESET_REACH = 0.01
"""Seconds apart two subsystems report the one reset they both saw."""
CRASH_REACH = 30.0
"""Seconds after the kernel's report of a crash that systemd-coredump may report it."""
CRASH_REPORTERS = frozenset({"kernel", "audit", "systemd-coredump"})

_EXCEPTION = re.compile(r"^\W*[A-Za-z_][\w.]{0,80}(?:Error|Exception): (.{12,}?)\W*$")
_QEMU_DEVICE = re.compile(r"-device (\S{1,512}?): ")
_EMPTY: tuple[object, ...] = (None, "", (), [], {})


@dataclass(frozen=True, slots=True)
class Repeat:
    """A record read as the same fault as an earlier event of its source.

    ``of_line`` is where that event's record starts, ``why`` the evidence
    (``copy``, ``traceback``, ``continuation``, ``burst``, ``reset``, ``exit``,
    ``crash``).
    """

    source: str
    offset: int
    line: int
    kind: str
    of_line: int
    why: str
    text: str


@dataclass(slots=True)
class _Seen:
    event: Event
    fields: dict[str, Any]
    exited: bool = False  # a second record of this exit was seen: a third is a new exit


def _own_fields(event: Event) -> dict[str, Any]:
    return {
        f.name: getattr(event, f.name) for f in dataclasses.fields(event) if f.name not in _ENVELOPE
    }


_ENVELOPE = frozenset(f.name for f in dataclasses.fields(Event))


def _compatible(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """No field the two both give differs (one may add what the other lacks)."""
    return all(a[k] == b[k] or a[k] in _EMPTY or b[k] in _EMPTY for k in a.keys() & b.keys())


def _close(old: Event, new: Event, reach: float = TIME_REACH) -> bool:
    if new.line - old.line > LINE_REACH:
        return False
    if old.time is None or new.time is None:
        return True
    return abs((new.time - old.time).total_seconds()) <= reach


def _crash(old: Event, new: Event) -> bool:
    """The kernel's segfault line, audit's SECCOMP and ANOM_ABEND records and
    systemd-coredump's "dumped core" for one process: one death."""
    return (
        isinstance(old, VirtiofsdExited)
        and isinstance(new, VirtiofsdExited)
        and old.reporter in CRASH_REPORTERS
        and new.reporter in CRASH_REPORTERS
        and old.name == new.name
        and old.status is None is new.status
        and (None in (old.signal, new.signal) or old.signal == new.signal)
    )


def _stamped(event: Event, time: datetime) -> bool:
    """The record's own stamp gives its ``time`` to the fraction of a second: a bare
    line timed by its neighbour's stamp is no evidence of a copy."""
    fraction = f"{time.microsecond:06d}".rstrip("0")
    return bool(fraction) and any(f"{sep}{fraction}" in event.raw for sep in ".,")


def _evidence(old: Event, new: Event) -> str | None:
    """Why ``new`` is ``old`` again, or None."""
    o, n = old.origin, new.origin
    if (
        new.message == old.message
        and new.time is not None
        and new.time == old.time
        and (o.program, o.pid) != (n.program, n.pid)
        and _stamped(old, new.time)
        and _stamped(new, new.time)
    ):
        # One record under two names (journald: the shim and containerd), down to the
        # stamp's fraction; two daemons that log alike in one second are two events.
        return "copy"
    said = _EXCEPTION.match(new.message)
    if said is not None and said.group(1) in old.message:
        return "traceback"
    device = _QEMU_DEVICE.search(new.message)
    if device is not None and f"-device {device.group(1)}: " in old.message:
        return "continuation"
    if (
        isinstance(new, VmReset)
        and isinstance(old, VmReset)
        and new.trigger != old.trigger  # two subsystems: ACPI's and i8042's handler
        and (o.program, o.pid) == (n.program, n.pid)
    ):
        if o.uptime is not None and n.uptime is not None:
            apart = abs(n.uptime - o.uptime)
        elif old.time is not None and new.time is not None:
            apart = abs((new.time - old.time).total_seconds())
        else:
            return None
        return "reset" if apart <= RESET_REACH else None
    if (
        isinstance(new, VmmExited)
        and isinstance(old, VmmExited)
        and (o.program, o.pid) == (n.program, n.pid)
        and o.location is not None  # the logger's ``Fatal error:`` line ...
        and n.location is None  # ... then the chain printed on stderr
        and (None in (old.errno, new.errno) or old.errno == new.errno)
    ):
        return "exit"  # a process exits once: the logger's line and its stderr chain
    program = n.program or ""
    if (
        isinstance(new, BackendDisconnected)
        and program.startswith("qemu")
        and program == o.program
        and old.share == new.share
    ):
        return "burst"  # QEMU's vhost-user words, each call that found the socket gone
    return None


class RecentEvents:
    """The last events of one source, to tell a repeat from a new fault."""

    def __init__(self) -> None:
        self._seen: deque[_Seen] = deque(maxlen=RECENT)

    def repeat_of(self, event: Event) -> tuple[Event, str] | None:
        """The earlier event ``event`` repeats and the evidence, else remember it."""
        fields = _own_fields(event)
        for seen in reversed(self._seen):
            old = seen.event
            if old.kind != event.kind or not _close(old, event, CRASH_REACH):
                continue
            if _crash(old, event):
                return old, "crash"
            if not _close(old, event):
                continue
            if old.share not in (None, event.share) and event.share is not None:
                continue
            why = _evidence(old, event)
            if why == "exit" and not seen.exited:
                seen.exited = True  # the logger's line and the stderr chain, once
                return old, why
            if why == "reset" or (why not in (None, "exit") and _compatible(seen.fields, fields)):
                return old, why
        self._seen.append(_Seen(event, fields))
        return None

    def clear(self) -> None:
        self._seen.clear()


def repeat(event: Event, of: Event, why: str) -> Repeat:
    """The record of ``event`` as a repeat of ``of``."""
    return Repeat(event.source, event.offset, event.line, event.kind, of.line, why, event.raw)
