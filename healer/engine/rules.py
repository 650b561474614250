"""Rules as data: load ``rules/*.toml``, validate every key, compile to matchers.

A rules directory holds any number of ``*.toml`` files with ``[[rule]]`` tables and at
most one ``[policy]`` table. Every problem is reported with its file, line and a fix;
loading raises :class:`RulesError` with all of them, so a bad file never yields a
half-configured engine.
"""

from __future__ import annotations

import hashlib
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from healer.engine.model import HEALING, Action
from healer.events import KINDS, Event
from healer.tomlspot import LocatedError, Problem, Spots, suggest

__all__ = [
    "ACTIONS",
    "CORRELATIONS",
    "HEALING",
    "Policy",
    "Problem",
    "Rule",
    "RuleSet",
    "RulesError",
    "default_rules_dir",
    "describe",
    "load_rules",
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
MAX_WINDOW_S = 7 * 24 * 3600.0
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
_RULE_KEYS = {
    "id",
    "description",
    "severity",
    "enabled",
    "on",
    "where",
    "correlate",
    "count",
    "window",
    "then",
    "actions",
    "then_actions",
}
_ENVELOPE_FIELDS = {"share", "level", "source", "message", "program"}


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


_POLICY_KEYS = {
    "backoff_initial": "backoff_initial_s",
    "backoff_max": "backoff_max_s",
    "backoff_jitter": "backoff_jitter",
    "healthy_after": "healthy_after_s",
    "circuit_retry": "circuit_retry_s",
    "dedupe": "dedupe_s",
    "seed": "seed",
    "allow_restart_vm": "allow_restart_vm",
    "recovery_kinds": "recovery_kinds",
    "stale_session": "stale_session_s",
    "stale_limit": "stale_limit",
}


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
    """One compiled rule; see the README's rule reference for the keys."""

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


def default_rules_dir() -> Path:
    """The shipped rules: ``rules/`` of a source checkout, else the installed copy."""
    checkout = Path(__file__).resolve().parents[2] / "rules"
    if any(checkout.glob("*.toml")):
        return checkout
    return Path(sys.prefix) / "share" / "healer" / "rules"


def load_rules(path: Path | str) -> RuleSet:
    """Load a directory of ``*.toml`` rule files (or one file); raise RulesError."""
    root = Path(path)
    if root.is_dir():
        files = sorted(root.glob("*.toml"))
    elif root.exists():
        files = [root]
    else:
        raise RulesError([Problem(str(root), 0, "no such file or directory", "name a rules dir")])
    if not files:
        raise RulesError([Problem(str(root), 0, "no *.toml rule files", "add rule files")])
    problems: list[Problem] = []
    rules: list[Rule] = []
    policy: Policy | None = None
    digest = hashlib.sha256()
    for file in files:
        text = file.read_bytes()
        digest.update(file.name.encode() + b"\0" + text + b"\0")
        loaded = _load_file(str(file), text.decode("utf-8", "replace"), problems)
        if loaded is None:
            continue
        file_rules, file_policy = loaded
        rules += file_rules
        if file_policy is not None:
            if policy is not None:
                line = Spots(text.decode("utf-8", "replace")).line("policy")
                problems.append(Problem(str(file), line, "a second [policy]", "keep one"))
            policy = file_policy
    seen: dict[str, Rule] = {}
    for rule in rules:
        if rule.id in seen:
            first = seen[rule.id]
            problems.append(
                Problem(
                    rule.file,
                    rule.line,
                    f"rule id {rule.id!r} is already used at {first.file}:{first.line}",
                    "give each rule its own id",
                )
            )
        seen[rule.id] = rule
    if problems:
        raise RulesError(problems)
    return RuleSet(
        tuple(rules),
        policy or Policy(),
        digest.hexdigest()[:16],
        tuple(str(f) for f in files),
    )


def _load_file(
    name: str, text: str, problems: list[Problem]
) -> tuple[list[Rule], Policy | None] | None:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        line = int(m.group(1)) if m else max(1, text.count("\n"))  # "at end of document"
        problems.append(Problem(name, line, f"not valid TOML: {exc}", "fix the syntax"))
        return None
    where = _Locator(name, text)
    for key in data:
        if key not in ("rule", "policy"):
            problems.append(
                where.problem(
                    None, key, f"unknown top-level key {key!r}", "use [[rule]] or [policy]"
                )
            )
    raw_rules = data.get("rule", [])
    if not isinstance(raw_rules, list):
        problems.append(where.problem(None, "rule", "rule must be [[rule]] tables", "use [[rule]]"))
        raw_rules = []
    rules = [r for i, raw in enumerate(raw_rules) if (r := _rule(raw, i, where, problems))]
    policy = None
    if "policy" in data:
        policy = _policy(data["policy"], where, problems)
    return rules, policy


class _Locator:
    """Problems placed at their file and line."""

    def __init__(self, name: str, text: str) -> None:
        self.name = name
        self.spots = Spots(text)

    def line(self, rule: int | None, key: str | None) -> int:
        if rule is None:
            return self.spots.line(key or "")
        path = key.split(".") if key else []
        return self.spots.line("rule", rule, *path)

    def problem(self, rule: int | None, key: str | None, message: str, fix: str) -> Problem:
        return Problem(self.name, self.line(rule, key), message, fix)

    def policy_line(self, key: str | None = None) -> int:
        return self.spots.line("policy", key) if key else self.spots.line("policy")


def _strings(value: Any) -> list[str] | None:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _kinds(raw: Any, index: int, key: str, where: _Locator, out: list[Problem]) -> frozenset[str]:
    kinds = _strings(raw)
    if not kinds:
        out.append(
            where.problem(index, key, f"{key} must list event kinds", 'e.g. ["VirtiofsdExited"]')
        )
        return frozenset()
    for kind in kinds:
        if kind not in KINDS:
            out.append(
                where.problem(index, key, f"unknown event kind {kind!r}", suggest(kind, KINDS))
            )
    return frozenset(k for k in kinds if k in KINDS)


def _actions(
    raw: Any, index: int, key: str, where: _Locator, out: list[Problem]
) -> tuple[Action, ...]:
    actions = _strings(raw)
    if actions is None:
        out.append(
            where.problem(
                index, key, f"{key} must list actions", f"choose from {[a.value for a in ACTIONS]}"
            )
        )
        return ()
    for action in actions:
        if action not in ACTIONS:
            out.append(
                where.problem(
                    index,
                    key,
                    f"unknown action {action!r}",
                    suggest(action, [a.value for a in ACTIONS]),
                )
            )
    return tuple(Action(a) for a in actions if a in ACTIONS)


def _rule(raw: Any, index: int, where: _Locator, out: list[Problem]) -> Rule | None:
    if not isinstance(raw, dict):
        out.append(where.problem(index, None, "a rule must be a table", "use [[rule]]"))
        return None
    before = len(out)
    for key in raw:
        if key not in _RULE_KEYS:
            out.append(where.problem(index, key, f"unknown key {key!r}", suggest(key, _RULE_KEYS)))
    rule_id = raw.get("id")
    if not isinstance(rule_id, str) or not _ID.match(rule_id):
        out.append(
            where.problem(
                index, "id", f"bad or missing id {rule_id!r}", "lower-case letters, digits, '-'"
            )
        )
        rule_id = f"rule-{index + 1}"
    if raw.get("enabled", True) is False:
        return None
    if not isinstance(raw.get("enabled", True), bool):
        out.append(
            where.problem(index, "enabled", "enabled must be true or false", "write true or false")
        )
    on = _kinds(raw.get("on"), index, "on", where, out)
    actions = _actions(raw.get("actions", []), index, "actions", where, out)
    correlate = raw.get("correlate", "single")
    if correlate not in CORRELATIONS:
        out.append(
            where.problem(
                index,
                "correlate",
                f"unknown correlation {correlate!r}",
                suggest(str(correlate), CORRELATIONS),
            )
        )
        correlate = "single"
    severity = raw.get("severity", "warning")
    if severity not in SEVERITIES:
        out.append(
            where.problem(
                index, "severity", f"unknown severity {severity!r}", f"one of {list(SEVERITIES)}"
            )
        )
    window = raw.get("window", 0)
    count = raw.get("count", 1)
    if correlate != "single":
        if (
            not isinstance(window, int | float)
            or isinstance(window, bool)
            or not 0 < window <= MAX_WINDOW_S
        ):
            out.append(
                where.problem(
                    index,
                    "window",
                    f"window {window!r} is impossible for {correlate}",
                    f"seconds in (0, {int(MAX_WINDOW_S)}]",
                )
            )
            window = 1
    elif "window" in raw:
        out.append(
            where.problem(
                index,
                "window",
                "a single rule has no window",
                'drop it, or set correlate = "threshold" / "cooldown"',
            )
        )
    if correlate == "threshold":
        if not isinstance(count, int) or isinstance(count, bool) or count < 2:
            out.append(
                where.problem(
                    index,
                    "count",
                    f"count {count!r}: a threshold needs at least 2 events",
                    "set count = 2 or more, or use single",
                )
            )
            count = 2
    elif "count" in raw:
        out.append(
            where.problem(
                index, "count", f"count is only for thresholds, not {correlate}", "drop it"
            )
        )
    then: frozenset[str] = frozenset()
    then_actions: tuple[Action, ...] = ()
    if correlate == "pair":
        then = _kinds(raw.get("then"), index, "then", where, out)
        then_actions = _actions(raw.get("then_actions", []), index, "then_actions", where, out)
        if on & then:
            out.append(
                where.problem(
                    index,
                    "then",
                    "a kind is both 'on' and 'then'",
                    "a pair needs two different kinds",
                )
            )
    else:
        for key in ("then", "then_actions"):
            if key in raw:
                out.append(
                    where.problem(
                        index, key, f"{key} is only for pairs", 'drop it or set correlate = "pair"'
                    )
                )
    if not raw.get("actions") and not raw.get("then_actions"):
        out.append(
            where.problem(
                index,
                "actions",
                "the rule asks for no action",
                f"list actions from {[a.value for a in ACTIONS]}",
            )
        )
    predicates = _where(raw.get("where", {}), on, index, where, out)
    if len(out) > before:
        return None
    description = raw.get("description", "")
    return Rule(
        id=rule_id,
        on=on,
        actions=actions,
        description=description if isinstance(description, str) else "",
        severity=severity,
        correlate=correlate,
        count=count,
        window_s=float(window),
        then=then,
        then_actions=then_actions,
        where=predicates,
        file=where.name,
        line=where.line(index, None),
    )


def _where(
    raw: Any, on: frozenset[str], index: int, where: _Locator, out: list[Problem]
) -> tuple[FieldIn | MessageMatches, ...]:
    if not isinstance(raw, dict):
        out.append(where.problem(index, "where", "where must be a table", "use [rule.where]"))
        return ()
    predicates: list[FieldIn | MessageMatches] = []
    for key, value in raw.items():
        spot = f"where.{key}"
        if key == "message":
            if not isinstance(value, str):
                out.append(
                    where.problem(
                        index,
                        spot,
                        "message must be a regular expression",
                        'e.g. message = "Broken pipe"',
                    )
                )
                continue
            try:
                predicates.append(MessageMatches(re.compile(value)))
            except re.error as exc:
                out.append(
                    where.problem(index, spot, f"bad regular expression: {exc}", "fix the pattern")
                )
            continue
        missing = sorted(k for k in on if key not in _field_names(KINDS[k]))
        if missing and key not in _ENVELOPE_FIELDS:
            out.append(
                where.problem(
                    index,
                    spot,
                    f"field {key!r} does not exist on {', '.join(missing)}",
                    "match a field of every kind in 'on'",
                )
            )
            continue
        values = value if isinstance(value, list) else [value]
        if not values or not all(isinstance(v, str | int | bool) for v in values):
            out.append(
                where.problem(
                    index,
                    spot,
                    f"{key} must be a value or a list of values",
                    'e.g. ["ConnectionRefused", "NotFound"]',
                )
            )
            continue
        predicates.append(FieldIn(key, frozenset(values)))
    return tuple(predicates)


def _field_names(cls: type[Event]) -> set[str]:
    return {f.name for f in fields(cls)}


def _policy(raw: Any, where: _Locator, out: list[Problem]) -> Policy | None:
    if not isinstance(raw, dict):
        out.append(
            Problem(
                where.name,
                where.policy_line(),
                "policy must be a table",
                "use [policy]",
            )
        )
        return None
    values: dict[str, Any] = {}
    defaults = Policy()
    for key, value in raw.items():
        line = where.policy_line(key)
        name = _POLICY_KEYS.get(key)
        if name is None:
            out.append(
                Problem(where.name, line, f"unknown policy key {key!r}", suggest(key, _POLICY_KEYS))
            )
            continue
        expected = type(getattr(defaults, name))
        if name == "recovery_kinds":
            kinds = _strings(value)
            bad = [k for k in kinds or [] if k not in KINDS]
            if kinds is None or bad:
                out.append(
                    Problem(
                        where.name, line, f"recovery_kinds: unknown kinds {bad}", "list event kinds"
                    )
                )
                continue
            values[name] = tuple(kinds)
        elif expected is float and isinstance(value, int | float) and not isinstance(value, bool):
            if value < 0 or (name == "backoff_jitter" and value > 1):
                out.append(
                    Problem(
                        where.name,
                        line,
                        f"{key} = {value} is out of range",
                        "a non-negative number (jitter at most 1)",
                    )
                )
                continue
            values[name] = float(value)
        elif isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
            values[name] = value
        else:
            out.append(
                Problem(
                    where.name,
                    line,
                    f"{key} must be {expected.__name__}",
                    f"e.g. {key} = {getattr(defaults, name)!r}",
                )
            )
    policy = Policy(**values)
    if policy.backoff_initial_s > policy.backoff_max_s:
        out.append(
            Problem(
                where.name,
                where.policy_line("backoff_max"),
                "backoff_max is below backoff_initial",
                "raise backoff_max",
            )
        )
    return policy


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
