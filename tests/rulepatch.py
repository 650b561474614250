"""Rule sets for tests and benchmarks, changed so that a mistake shows.

A test that wants the shipped rules with a shorter backoff used to write
``text.replace("backoff_initial = 1.0", "backoff_initial = 0.1")``: when the shipped
file changes its spelling, the replacement matches nothing and the test runs on the
shipped rules, quietly. Here the rules are changed as typed objects instead, and
written as TOML that is read back and compared::

    rules = shipped_rules()
    rules = replace(rules, policy=replace(rules.policy, backoff_initial_s=0.1))
    rules = without(rules, "restart-storm")  # LookupError if no rule has that id
    write_rules(rules, tmp_path / "rules")  # raises unless it loads back as ``rules``

A misspelt field is a type error (mypy checks ``dataclasses.replace``), a rule id that
is gone a ``LookupError``, and a rule set the TOML cannot say an ``AssertionError``.
For text that is not rules (a config, Prometheus' YAML), :func:`patch_text` replaces
and raises unless the text to replace occurs exactly as often as expected.

tests/ is on ``sys.path`` for the tests (pytest's rootdir insertion, as for
conftest); bench/ scripts put it there themselves, as bench/kill_to_usable.py does for
the guest rig: ``sys.path.insert(0, str(ROOT / "tests"))``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path

from healer.engine.rules import FieldIn, MessageMatches, Policy, Rule, RuleSet
from healer.rulefiles import load_rules

__all__ = [
    "SHIPPED",
    "edit",
    "patch_text",
    "rules_toml",
    "shipped_rules",
    "without",
    "write_rules",
]

SHIPPED = Path(__file__).resolve().parent.parent / "rules"
"""The rules directory healer ships (the top-level ``rules/``)."""


def patch_text(text: str, old: str, new: str, *, count: int = 1) -> str:
    """``text`` with ``old`` replaced by ``new``; ValueError unless ``old`` occurs
    exactly ``count`` times (so a patch whose target moved fails instead of doing
    nothing)."""
    found = text.count(old)
    if found != count or not old:
        msg = f"expected {count} occurrence(s) of {old!r}, found {found}: the patch is stale"
        raise ValueError(msg)
    return text.replace(old, new)


def shipped_rules() -> RuleSet:
    """The shipped rules, loaded (and so validated) as healer loads them."""
    return load_rules(SHIPPED)


def edit(
    rules: RuleSet, which: str | Callable[[Rule], bool], change: Callable[[Rule], Rule | None]
) -> RuleSet:
    """``rules`` with ``change`` applied to the rule whose id is ``which`` (or to every
    rule ``which`` selects); a change that returns None drops the rule. LookupError
    when ``which`` selects no rule."""
    selects = (lambda rule: rule.id == which) if isinstance(which, str) else which
    out: list[Rule] = []
    hits = 0
    for rule in rules.rules:
        if not selects(rule):
            out.append(rule)
            continue
        hits += 1
        changed = change(rule)
        if changed is not None:
            out.append(changed)
    if hits == 0:
        ids = [rule.id for rule in rules.rules]
        msg = f"no rule matches {which!r} (the rules are {ids})"
        raise LookupError(msg)
    return replace(rules, rules=tuple(out))


def without(rules: RuleSet, *ids: str) -> RuleSet:
    """``rules`` without the rules of these ids; LookupError for an id that is not there."""
    for rule_id in ids:
        rules = edit(rules, rule_id, lambda _: None)
    return rules


def _value(value: object) -> str:
    """A TOML value: strings as JSON basic strings (TOML's escapes are JSON's)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    msg = f"no TOML for {value!r}"
    raise TypeError(msg)


def _sorted(values: frozenset[object]) -> list[object]:
    return sorted(values, key=lambda v: (type(v).__name__, str(v)))


def _policy_lines(policy: Policy) -> list[str]:
    # The TOML keys are the field names without the unit: backoff_initial_s is
    # backoff_initial. A key this gets wrong is caught by write_rules' read-back.
    lines = ["[policy]"]
    for f in fields(Policy):
        key = f.name.removesuffix("_s")
        lines.append(f"{key} = {_value(getattr(policy, f.name))}")
    return lines


def _rule_lines(rule: Rule) -> list[str]:
    lines = [
        "[[rule]]",
        f"id = {_value(rule.id)}",
        f"description = {_value(rule.description)}",
        f"severity = {_value(rule.severity)}",
        f"correlate = {_value(rule.correlate)}",
        f"on = {_value(sorted(rule.on))}",
        f"actions = {_value([a.value for a in rule.actions])}",
    ]
    if rule.correlate == "threshold":
        lines.append(f"count = {_value(rule.count)}")
    if rule.correlate != "single":
        lines.append(f"window = {_value(rule.window_s)}")
    if rule.correlate == "pair":
        lines.append(f"then = {_value(sorted(rule.then))}")
        lines.append(f"then_actions = {_value([a.value for a in rule.then_actions])}")
    if rule.where:
        lines.append("[rule.where]")
        for predicate in rule.where:
            if isinstance(predicate, MessageMatches):
                lines.append(f"message = {_value(predicate.pattern.pattern)}")
            else:
                assert isinstance(predicate, FieldIn)
                lines.append(f"{predicate.name} = {_value(_sorted(predicate.allowed))}")
    return lines


def rules_toml(rules: RuleSet) -> str:
    """``rules`` as one rules file (policy first, then every rule in order)."""
    blocks = [_policy_lines(rules.policy), *(_rule_lines(rule) for rule in rules.rules)]
    return "\n\n".join("\n".join(block) for block in blocks) + "\n"


def _comparable(rules: RuleSet) -> tuple[Policy, tuple[Rule, ...]]:
    """What a rule set decides with: not where it was read from, nor its digest."""
    return rules.policy, tuple(replace(rule, file="", line=0) for rule in rules.rules)


def write_rules(rules: RuleSet, target: Path) -> Path:
    """Write ``rules`` as ``target/healing.toml`` and return ``target`` (a rules
    directory for ``--rules`` or a config's ``rules =``). Raises AssertionError unless
    healer loads the file back as exactly ``rules``."""
    target.mkdir(parents=True, exist_ok=True)
    path = target / "healing.toml"
    path.write_text(rules_toml(rules), encoding="utf-8")
    loaded = load_rules(target)
    if _comparable(loaded) != _comparable(rules):
        msg = f"{path} does not load back as the rules written: {loaded} != {rules}"
        raise AssertionError(msg)
    return target
