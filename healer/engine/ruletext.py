"""Rule files' TOML text in, a validated :class:`RuleSet` out: pure, every problem located.

:func:`compile_rules` takes ``(file name, text)`` pairs, as a caller read them, and
checks every key: unknown keys, kinds, actions, bad regular expressions, impossible
windows, duplicate ids. All problems, each with its file, line and a fix, are raised
together in one :class:`RulesError`, so a bad file never yields a half-configured
engine. The digest journaled with every run is :func:`rules_digest` of the files.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Callable, Iterable, Sequence
from pathlib import PurePath
from typing import Any

from healer.engine.model import Action
from healer.engine.rules import Policy, Rule, RulesError, RuleSet
from healer.engine.ruletable import Locator, compile_rule, strings
from healer.events import KINDS
from healer.tomlspot import Problem, Spots, suggest, wrong_type

__all__ = ["compile_rules", "rule_warnings", "rules_digest"]

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
    "source_decisions": "source_decisions",
    "source_window": "source_window_s",
}


_POLICY_TYPES: dict[type, tuple[str, Callable[[Any], bool]]] = {
    float: ("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    bool: ("true or false", lambda v: isinstance(v, bool)),
}


def _never(value: Any) -> bool:
    return False


def rules_digest(files: Iterable[tuple[str, bytes]]) -> str:
    """The digest a journal records: each file's base name and bytes, in order.

    Only the base name counts, so the same rules read from another directory give
    the same digest.
    """
    digest = hashlib.sha256()
    for name, data in files:
        digest.update(PurePath(name).name.encode() + b"\0" + data + b"\0")
    return digest.hexdigest()[:16]


def compile_rules(files: Sequence[tuple[str, str]], *, digest: str | None = None) -> RuleSet:
    """Validate and compile rule files given as ``(file name, TOML text)``, in order.

    Raises :class:`RulesError` with every problem found. ``digest`` defaults to
    :func:`rules_digest` of the texts as UTF-8; a loader that read bytes passes the
    digest of those bytes, so a file that is not valid UTF-8 keeps its digest.
    """
    if not files:
        raise RulesError([Problem("", 0, "no rule files given", "add rule files")])
    problems: list[Problem] = []
    rules: list[Rule] = []
    policy: Policy | None = None
    for name, text in files:
        loaded = _load_file(name, text, problems)
        if loaded is None:
            continue
        file_rules, file_policy = loaded
        rules += file_rules
        if file_policy is not None:
            if policy is not None:
                line = Spots(text).line("policy")
                problems.append(Problem(name, line, "a second [policy]", "keep one"))
            policy = file_policy
    problems += _duplicates(rules)
    if problems:
        raise RulesError(problems)
    if digest is None:
        digest = rules_digest((name, text.encode()) for name, text in files)
    return RuleSet(tuple(rules), policy or Policy(), digest, tuple(name for name, _ in files))


def rule_warnings(rules: RuleSet) -> list[Problem]:
    """What in valid rules will not do what it says: a ``restart_vm`` the policy does
    not allow is suppressed every time (``healer check`` prints these as warnings)."""
    warnings = []
    if not rules.policy.allow_restart_vm:
        for rule in rules.rules:
            if Action.RESTART_VM in (*rule.actions, *rule.then_actions):
                warnings.append(
                    Problem(
                        rule.file,
                        rule.line,
                        f"rule {rule.id!r} asks for restart_vm, which the policy does not "
                        "allow: it will always be suppressed",
                        "set allow_restart_vm = true in [policy], or set enabled = false",
                    )
                )
    return warnings


def _duplicates(rules: Iterable[Rule]) -> list[Problem]:
    seen: dict[str, Rule] = {}
    problems = []
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
    return problems


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
    where = Locator(name, text)
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
    rules = [r for i, raw in enumerate(raw_rules) if (r := compile_rule(raw, i, where, problems))]
    policy = None
    if "policy" in data:
        policy = _policy(data["policy"], where, problems)
    return rules, policy


def _policy(raw: Any, where: Locator, out: list[Problem]) -> Policy | None:
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
            kinds = strings(value)
            if kinds is None:
                message, fix = wrong_type(
                    key, value, "a list of event kinds", list(defaults.recovery_kinds), _never
                )
                out.append(Problem(where.name, line, message, fix))
                continue
            bad = [k for k in kinds if k not in KINDS]
            if bad:
                fix = suggest(bad[0], KINDS)
                out.append(Problem(where.name, line, f"recovery_kinds: unknown kinds {bad}", fix))
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
            what, fits = _POLICY_TYPES[expected]
            if name.endswith("_s"):
                what += " of seconds"
            message, fix = wrong_type(key, value, what, getattr(defaults, name), fits)
            out.append(Problem(where.name, line, message, fix))
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
