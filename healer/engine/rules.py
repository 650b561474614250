"""Rules as data: the rule model, the policy, the predicates and what each action does.

Pure: nothing here reads a file. The TOML text of rule files is validated and
compiled by :mod:`healer.engine.ruletext`; reading a rules directory (and where the
shipped rules live) is :mod:`healer.rulefiles`, at the edge.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from healer.engine.model import HEALING, Action
from healer.events import Event
from healer.tomlspot import LocatedError, Problem

__all__ = [
    "ACTIONS",
    "CORRELATIONS",
    "HEALING",
    "SEVERITIES",
    "FieldIn",
    "MessageMatches",
    "Policy",
    "Problem",
    "Rule",
    "RuleSet",
    "RulesError",
    "describe",
]

ACTIONS: dict[Action, str] = {
    Action.RESPAWN: "start virtiofsd again on the share's socket (with backoff)",
    Action.ENSURE: "make sure virtiofsd listens; respawn it only if it does not",
    Action.READD: "remove the fs device if present, wait until gone, add it again",
    Action.REMOUNT: "unmount and mount the share in the guest, then probe it",
    Action.OPEN_CIRCUIT: "stop healing the share (restart storm), alert, retry slowly",
    Action.NOTIFY: "record an alert for operators",
    Action.RESTART_VM: "restart the VM (opt-in: needs policy.allow_restart_vm = true)",
}
"""Every action a rule may ask for, with what it does."""

CORRELATIONS = ("single", "threshold", "pair", "cooldown")
SEVERITIES = ("info", "warning", "critical")


class RulesError(LocatedError):
    """The rules cannot be used; ``problems`` says where and how to fix each."""


@dataclass(frozen=True, slots=True)
class Policy:
    """Engine settings: backoff, circuit breaker, recovery signals. Times in seconds."""

    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    backoff_jitter: float = 0.2
    healthy_after_s: float = 60.0
    circuit_retry_s: float = 300.0
    dedupe_s: float = 5.0
    seed: int = 0
    allow_restart_vm: bool = False
    recovery_kinds: tuple[str, ...] = ("VirtiofsdClientConnected", "DeviceAdded")
    # A client that leaves this soon after connecting was a dead connection (a probe,
    # a VMM that died while queued): a recovery only counts once the session lasted
    # this long, and such a death is respawned at once, not counted towards storms.
    stale_session_s: float = 0.5
    stale_limit: int = 10  # stale connections per minute treated so; beyond, ordinary deaths
    # A tailed log decides at most this many actions per window; beyond, they are
    # suppressed and counted. healer's own observations (its daemons' exits and
    # stderr) are never limited: they are what the circuit breaker counts.
    source_decisions: int = 30
    source_window_s: float = 60.0


@dataclass(frozen=True, slots=True)
class FieldIn:
    """Predicate: the event's field has one of the listed values."""

    name: str
    allowed: frozenset[Any]

    def __call__(self, event: Event) -> bool:
        value = getattr(event, self.name, None)
        if isinstance(value, tuple):  # a chain matches when it contains a listed variant
            return any(v in self.allowed for v in value)
        return value in self.allowed

    def __repr__(self) -> str:
        return f"{self.name} in {sorted(map(str, self.allowed))}"


@dataclass(frozen=True, slots=True)
class MessageMatches:
    """Predicate: the event's message matches a regular expression."""

    pattern: re.Pattern[str]

    def __call__(self, event: Event) -> bool:
        return self.pattern.search(event.message) is not None

    def __repr__(self) -> str:
        return f"message ~ /{self.pattern.pattern}/"


@dataclass(frozen=True, slots=True)
class Rule:
    """One compiled rule; see docs/rules.md for the keys."""

    id: str
    on: frozenset[str]
    actions: tuple[Action, ...]
    description: str = ""
    severity: str = "warning"
    correlate: str = "single"
    count: int = 1
    window_s: float = 0.0
    then: frozenset[str] = frozenset()
    then_actions: tuple[Action, ...] = ()
    where: tuple[FieldIn | MessageMatches, ...] = ()
    file: str = ""
    line: int = 0

    def matches(self, event: Event) -> bool:
        """The event is of a listed kind and meets every predicate."""
        return event.kind in self.on and all(p(event) for p in self.where)


@dataclass(frozen=True, slots=True)
class RuleSet:
    """The rules and policy of one directory, with a digest for the journal."""

    rules: tuple[Rule, ...]
    policy: Policy = field(default_factory=Policy)
    digest: str = ""
    files: tuple[str, ...] = ()

    def kinds(self) -> frozenset[str]:
        """Every event kind some rule or the policy reacts to."""
        kinds = set(self.policy.recovery_kinds)
        for rule in self.rules:
            kinds |= rule.on | rule.then
        return frozenset(kinds)


def describe(rules: RuleSet) -> Mapping[str, str]:
    """One line per rule, for ``healer check``."""
    lines = {}
    for rule in rules.rules:
        trigger = " | ".join(sorted(rule.on))
        cond = f" where {', '.join(map(repr, rule.where))}" if rule.where else ""
        if rule.correlate == "threshold":
            how = f"{rule.count} events within {rule.window_s:g} s (per share)"
        elif rule.correlate == "pair":
            how = f"then {' | '.join(sorted(rule.then))} within {rule.window_s:g} s, else"
        elif rule.correlate == "cooldown":
            how = f"at most once per {rule.window_s:g} s (per share)"
        else:
            how = "each event"
        acts = " -> ".join(rule.actions) or "nothing"
        then = f"; in time: {' -> '.join(rule.then_actions)}" if rule.then_actions else ""
        lines[rule.id] = f"on {trigger}{cond}: {how} -> {acts}{then}"
    return lines
