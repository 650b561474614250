"""What a replay returns: typed counts, the rules behind its decisions, its reports.

The counts are the ``--format counts`` document before it is JSON: one shape for
logs (lines read, events parsed, decisions made) and one for a journal (what it
holds, and what re-deciding it gave, when that was asked for).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from healer.metrics import HealerMetrics
    from healer.report import Postmortem

__all__ = ["JournalCounts", "LogCounts", "Redecided", "ReplayResult", "WhatIf"]


@dataclass(frozen=True, slots=True)
class LogCounts:
    """Totals of a log replay; ``decisions`` is None when no rules ran."""

    lines: int
    events: int
    unparsed: int
    truncated_lines: int
    kinds: Mapping[str, int]
    decisions: int | None

    def as_dict(self) -> dict[str, object]:
        """The documented ``--format counts`` keys, in their documented order."""
        out: dict[str, object] = {
            "lines": self.lines,
            "events": self.events,
            "unparsed": self.unparsed,
            "truncated_lines": self.truncated_lines,
            "kinds": dict(self.kinds),
        }
        if self.decisions is not None:
            out["decisions"] = self.decisions
        return out


@dataclass(frozen=True, slots=True)
class Redecided:
    """A journal's events decided again under the rules ``rules`` (a digest)."""

    rules: str
    decisions: int
    suppressed: int
    transitions: int


@dataclass(frozen=True, slots=True)
class JournalCounts:
    """What a journal holds, as recorded; ``redecided`` when it was decided again."""

    records: int
    events: int
    kinds: Mapping[str, int]
    decisions: int
    suppressed: int
    transitions: int
    outcomes: Mapping[str, int]  # by status, every outcome record (started included)
    rules: tuple[str, ...]  # the digests its runs were written under, in order
    redecided: Redecided | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "records": self.records,
            "events": self.events,
            "kinds": dict(self.kinds),
            "decisions": self.decisions,
            "suppressed": self.suppressed,
            "transitions": self.transitions,
            "outcomes": dict(self.outcomes),
            "rules": list(self.rules),
        }
        if self.redecided is not None:
            out["redecided"] = asdict(self.redecided)
        return out


@dataclass(frozen=True, slots=True)
class WhatIf:
    """The same input decided by a second rule set (digest ``rules``)."""

    rules: str
    postmortem: Postmortem


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """Everything a replay found, for the caller to print, render or write.

    ``rules`` is the digest of the rules the decisions shown were made under: empty
    for a journal read as recorded (its decisions are its own) and without rules.
    ``recorded_rules`` are the digests a journal says it was written under.
    """

    counts: LogCounts | JournalCounts
    inputs: tuple[str, ...]
    rules: str
    recorded: bool  # the decisions are a journal's own, and its actions ran
    recorded_rules: tuple[str, ...] = ()
    postmortem: Postmortem | None = None
    what_if: WhatIf | None = None
    metrics: HealerMetrics | None = None

    @property
    def redecided(self) -> bool:
        """A journal's events decided again under other rules than its own."""
        return isinstance(self.counts, JournalCounts) and self.counts.redecided is not None
