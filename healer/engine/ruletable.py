"""One ``[[rule]]`` table checked key by key and compiled into a :class:`Rule`.

Pure, like the rest of :mod:`healer.engine`: the caller (:mod:`healer.engine.ruletext`)
hands over the parsed table and a :class:`Locator` that turns a key into its file and
line, and collects every :class:`Problem` found.
"""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

from healer.engine.model import Action
from healer.engine.rules import (
    ACTIONS,
    CORRELATIONS,
    SEVERITIES,
    FieldIn,
    MessageMatches,
    Rule,
)
from healer.events import KINDS, Event
from healer.tomlspot import Problem, Spots, suggest

__all__ = ["MAX_WINDOW_S", "Locator", "compile_rule", "strings"]

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


class Locator:
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


def strings(value: Any) -> list[str] | None:
    """A string or a list of strings as a list; None for anything else."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _kinds(raw: Any, index: int, key: str, where: Locator, out: list[Problem]) -> frozenset[str]:
    kinds = strings(raw)
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
    raw: Any, index: int, key: str, where: Locator, out: list[Problem]
) -> tuple[Action, ...]:
    actions = strings(raw)
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


def compile_rule(raw: Any, index: int, where: Locator, out: list[Problem]) -> Rule | None:
    """The ``index``-th rule table compiled; None if disabled or wrong (problems in ``out``)."""
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
    window, count = _window_and_count(raw, correlate, index, where, out)
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


def _window_and_count(
    raw: dict[str, Any], correlate: str, index: int, where: Locator, out: list[Problem]
) -> tuple[float, int]:
    """``window`` and ``count`` as the correlation needs them (usable stand-ins if wrong)."""
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
    return window, count


def _where(
    raw: Any, on: frozenset[str], index: int, where: Locator, out: list[Problem]
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
