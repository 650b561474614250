"""What a replay's timeline carries, in the order it happened.

A log replay yields events (and, with ``--all``, the records no parser knew), each
followed by the decisions and phase changes it caused. A journal read as recorded
also holds what became of each action: its :class:`Outcome`. The pipeline, the
printers and the report speak these types, so this module sits below all three.
"""

from __future__ import annotations

from dataclasses import dataclass

from healer.engine.model import Decision, Status, Transition
from healer.events import Event
from healer.parse import ClockNote, Repeat, Unrecognized

__all__ = ["Item", "Outcome", "TimelineItem"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """An action's outcome as a journal recorded it.

    The journal's record names only the key; ``decision`` is the decision it answers,
    when the journal still holds it (segments before a snapshot may be gone).
    """

    key: str
    status: Status
    detail: str = ""
    decision: Decision | None = None


Item = Event | Unrecognized | Repeat | ClockNote
"""What the parsers yield (``healer.parse.Parsed``)."""

TimelineItem = Event | Unrecognized | Repeat | ClockNote | Decision | Transition | Outcome
"""Everything a replay's timeline can hold."""
