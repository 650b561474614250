"""What reaches the decision loop from other threads: typed messages, never dropped.

The loop is the only thread that steps the engine and writes the journal. Everything
that happens elsewhere (a daemon's exit reported by the holder, an action finished on
a share's worker, a QEMU step an action took, a file that changed) arrives here as
one of these, on an unbounded queue whose producers are themselves bounded (one exit
per daemon, one outcome per action).
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from healer.engine import Status
from healer.events import Event
from healer.holder.protocol import Exited

__all__ = [
    "ActionDone",
    "ActionReport",
    "DaemonGone",
    "HolderLost",
    "Message",
    "OnLoop",
    "StartWanted",
    "Wake",
]


# A share's daemon ended: the holder's notice as it came, or the same made for the pidfd
# of an adopted one (``known`` False: not healer's child, the status cannot be known).
DaemonGone = Exited


@dataclass(frozen=True, slots=True)
class ActionDone:
    """An action that ran on a worker thread ended."""

    key: str
    status: Status
    detail: str


@dataclass(frozen=True, slots=True)
class StartWanted:
    """An action on a worker needs the share's daemon started (the loop starts it)."""

    share: str


@dataclass(frozen=True, slots=True)
class ActionReport:
    """A fact an action established (QEMU: the device is gone, added, stuck)."""

    event: Event


@dataclass(frozen=True, slots=True)
class HolderLost:
    """The connection to the holder broke: it died or was stopped."""


@dataclass(frozen=True, slots=True)
class Wake:
    """Nothing but a nudge: a watched file changed."""


@dataclass(frozen=True, slots=True)
class OnLoop:
    """Work that must run on the decision loop (a control request); its answer is put
    on ``reply``, where the asking thread waits for it (bounded)."""

    work: Callable[[], dict[str, Any]]
    reply: queue.SimpleQueue[dict[str, Any]]


Message = DaemonGone | ActionDone | StartWanted | ActionReport | HolderLost | Wake | OnLoop
