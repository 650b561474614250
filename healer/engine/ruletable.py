"""One ``[[rule]]`` table checked key by key and compiled into a :class:`Rule`.

Pure, like the rest of :mod:`healer.engine`: the caller (:mod:`healer.engine.ruletext`)
hands over the parsed table and a :class:`Locator` that turns a key into its file and
line, and collects every :class:`Problem` found.
"""

from __future__ import annotations

import re
import signal
import tomllib
import types
import typing
from dataclasses import fields
from functools import cache
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
from healer.events import KINDS, LEVELS, Event, Origin
from healer.tomlspot import Problem, Spots, suggest, toml, type_name, wrong_type

__all__ = ["KNOWN_VALUES", "MAX_WINDOW_S", "Locator", "compile_rule", "strings"]

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

# std::io::ErrorKind's variants, as Rust's Debug prints them: what healer.rusterror
# reads from `kind: ...` (or from an errno or a strerror text), and the guest parser's
# NotFound and Unsupported.
_IO_ERROR_KINDS = (
    "NotFound", "PermissionDenied", "ConnectionRefused", "ConnectionReset",
    "HostUnreachable", "NetworkUnreachable", "ConnectionAborted", "NotConnected",
    "AddrInUse", "AddrNotAvailable", "NetworkDown", "BrokenPipe", "AlreadyExists",
    "WouldBlock", "NotADirectory", "IsADirectory", "DirectoryNotEmpty",
    "ReadOnlyFilesystem", "FilesystemLoop", "StaleNetworkFileHandle", "InvalidInput",
    "InvalidData", "TimedOut", "WriteZero", "StorageFull", "NotSeekable",
    "QuotaExceeded", "FilesystemQuotaExceeded", "FileTooLarge", "ResourceBusy",
    "ExecutableFileBusy", "Deadlock", "CrossesDevices", "TooManyLinks",
    "InvalidFilename", "ArgumentListTooLong", "Interrupted", "Unsupported",
    "UnexpectedEof", "OutOfMemory", "InProgress", "Other", "Uncategorized",
)  # fmt: skip
# Signal names as the parsers write them (supervisord "terminated by SIGKILL",
# systemd "status=9/KILL" with SIG put before, the Rust sandbox child's number named,
# healer's own exit status of a daemon): signal(7) order, SIGKILL among the first.
_SIGNALS = tuple(s.name for s in signal.Signals) + tuple(
    name for name in sorted(dir(signal)) if name.startswith("SIG") and name[3:4] != "_"
    and name not in signal.Signals.__members__
)  # fmt: skip
_REALTIME = re.compile(r"^SIGRT(MIN\+|MAX-)\d{1,2}$")  # systemd's "RTMIN+3"

KNOWN_VALUES: dict[str, tuple[str, ...]] = {
    "level": LEVELS,  # healer.parse.record: the record's level, else the kind's default
    "signal": _SIGNALS,
    "error_kind": _IO_ERROR_KINDS,
    "implementation": ("rust", "c"),  # healer.parse.virtiofsd
    "reporter": ("healer", "supervisord", "systemd", "script", "kata"),  # parse.supervisor
    "action": ("restart", "power-off"),  # GuestReboot, healer.parse.guest
}
"""The closed sets of values an event field can hold, where the parsers make one: a
``[rule.where]`` value outside them never matches, so ``healer check`` refuses it."""


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
        if kinds is None and raw is not None:
            message = f"{key} must list event kinds as strings, not {_what(raw)}"
        else:
            message = f"{key} must list event kinds"
        out.append(where.problem(index, key, message, f'e.g. {key} = ["VirtiofsdExited"]'))
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
                index,
                key,
                f"{key} must list actions as strings, not {_what(raw)}",
                f"choose from {[a.value for a in ACTIONS]}",
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
    if "id" in raw and not isinstance(rule_id, str):
        _wrong(raw, index, "id", "a string", "my-rule", where, out)
        rule_id = f"rule-{index + 1}"
    elif not isinstance(rule_id, str) or not _ID.match(rule_id):
        out.append(
            where.problem(
                index, "id", f"bad or missing id {rule_id!r}", "lower-case letters, digits, '-'"
            )
        )
        rule_id = f"rule-{index + 1}"
    if raw.get("enabled", True) is False:
        return None
    if not isinstance(raw.get("enabled", True), bool):
        _wrong(raw, index, "enabled", "true or false", False, where, out)
    for key in ("description", "severity", "correlate"):
        if key in raw and not isinstance(raw[key], str):
            _wrong(
                raw,
                index,
                key,
                "a string",
                "warning" if key == "severity" else "single" if key == "correlate" else "...",
                where,
                out,
            )
    on = _kinds(raw.get("on"), index, "on", where, out)
    actions = _actions(raw.get("actions", []), index, "actions", where, out)
    correlate = raw.get("correlate", "single")
    if not isinstance(correlate, str):
        correlate = "single"  # reported above
    elif correlate not in CORRELATIONS:
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
    if isinstance(severity, str) and severity not in SEVERITIES:
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
        if not _is_number(window):
            _wrong(raw, index, "window", "a number of seconds", 60, where, out)
            window = 1
        elif not 0 < window <= MAX_WINDOW_S:
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
        if not _is_integer(count):
            _wrong(raw, index, "count", "an integer", 5, where, out)
            count = 2
        elif count < 2:
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
        values = value if isinstance(value, list) else [value]
        problem = _field_problem(key, values, on)
        if problem is not None:
            out.append(where.problem(index, spot, *problem))
            continue
        predicates.append(FieldIn(key, frozenset(values)))
    return tuple(predicates)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _what(value: Any) -> str:
    return f"{type_name(value)} ({toml(value)})"


def _wrong(  # noqa: PLR0917 - the place, the key, what it must be, where to report
    raw: dict[str, Any],
    index: int,
    key: str,
    expected: str,
    example: Any,
    where: Locator,
    out: list[Problem],
) -> None:
    """A value of the wrong type, said as such, with the spelling that was meant."""
    fits = {
        "an integer": _is_integer,
        "a number of seconds": _is_number,
        "true or false": lambda v: isinstance(v, bool),
    }.get(expected, lambda v: isinstance(v, str))
    out.append(where.problem(index, key, *wrong_type(key, raw[key], expected, example, fits)))


# --- [rule.where]: a value is checked against the field's type and known values ---------

_TYPE_NAMES = {str: "a string", int: "an integer", bool: "true or false", float: "a number"}


@cache
def _hints(kind: str) -> dict[str, Any]:
    """The resolved annotation of each field of an event kind."""
    cls: type[Event] = KINDS[kind]
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls)}


def _scalars(annotation: Any) -> tuple[type, ...] | None:
    """The TOML scalar types a field can be compared with; None if it cannot be matched
    (a time, a table, the origin). A tuple field matches by what it contains."""
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        found: list[type] = []
        for part in typing.get_args(annotation):
            if part is type(None):
                continue
            scalars = _scalars(part)
            if scalars is None:
                return None
            found += scalars
        return tuple(found)
    if origin is tuple:
        args = typing.get_args(annotation)
        return _scalars(args[0]) if args else None
    if annotation is float:
        return (float, int)
    if annotation in (str, int, bool):
        return (annotation,)
    return None


def _readable(annotation: Any) -> str:
    """An unmatchable field's type in words: a time, a table, the record's origin."""
    text = str(annotation)
    if "datetime" in text:
        return "a time"
    if "Origin" in text:
        return "the record's origin: program, pid, thread"
    if "dict" in text:
        return "a table"
    return text


def _fits(value: Any, scalars: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in scalars
    if isinstance(value, int):
        return int in scalars
    return isinstance(value, str | float) and type(value) in scalars


def _known(key: str, value: str) -> bool:
    return value in KNOWN_VALUES[key] or (key == "signal" and _REALTIME.match(value) is not None)


def _listing(values: tuple[str, ...]) -> str:
    shown = ", ".join(repr(v) for v in values[:12])
    return shown if len(values) <= 12 else f"{shown}, ... ({len(values)} in all)"


def _field_problem(key: str, values: list[Any], on: frozenset[str]) -> tuple[str, str] | None:
    """Why ``key = values`` in ``[rule.where]`` can never match an event of ``on``, and
    the fix; None if every value can occur."""
    origin_fields = {f.name for f in fields(Origin)}
    kinds = sorted(on)
    missing = [k for k in kinds if key not in _hints(k)]
    if key in origin_fields and missing:
        return (
            f"{key} is not a field of events: it is the record's origin, which rules cannot match",
            "match the message (a regular expression) or the source instead",
        )
    if missing:
        return (
            f"field {key!r} does not exist on {', '.join(missing)}",
            "match a field of every kind in 'on'",
        )
    if not values or any(isinstance(v, list | dict) for v in values):
        return (
            f"{key} must be a value or a list of values",
            'e.g. ["ConnectionRefused", "NotFound"]',
        )
    if not kinds:
        return None  # 'on' names no known kind: that is the rule's problem, told once
    scalars = {k: _scalars(_hints(k)[key]) for k in kinds}
    unmatchable = [k for k, s in scalars.items() if s is None]
    if unmatchable:
        return (
            f"field {key!r} of {', '.join(unmatchable)} cannot be matched "
            f"(it holds {_readable(_hints(unmatchable[0])[key])})",
            "match a field that holds strings, numbers or true/false",
        )
    accepted = tuple(dict.fromkeys(t for s in scalars.values() for t in s or ()))
    for value in values:
        if not _fits(value, accepted):
            holds = " or ".join(
                _TYPE_NAMES[t] for t in accepted if t is not int or float not in accepted
            )
            known = KNOWN_VALUES.get(key) if str in accepted else None
            message = (
                f"{key} = {toml(value)} never matches: {key} holds {holds} on "
                f"{', '.join(kinds) or 'these kinds'}, not {type_name(value)}"
                + (f": one of {_listing(known)}" if known else "")
            )
            return message, _retyped(key, value, accepted, known)
        if key in KNOWN_VALUES and isinstance(value, str) and not _known(key, value):
            known = KNOWN_VALUES[key]
            same = [v for v in known if v.lower() == value.lower()]
            hint = f"did you mean {same[0]!r}?" if same else suggest(value, known)
            return (
                f"{key} {value!r} never occurs: {key} is one of {_listing(known)}",
                hint if hint.startswith("did you") else f"e.g. {key} = {toml(known[0])}",
            )
    return None


def _retyped(
    key: str, value: Any, accepted: tuple[type, ...], known: tuple[str, ...] | None
) -> str:
    """The value as the field holds it: ``signal = "SIGKILL"`` for ``signal = 9``."""
    if key == "signal" and _is_integer(value):
        try:
            name = signal.Signals(value).name
            return f'signal = "{name}" (signo holds the number, where there is one)'
        except ValueError:
            pass
    if str in accepted and not isinstance(value, str):
        text = toml(value)
        if known is None or text in known:
            return f'{key} = "{text}"'
    if isinstance(value, str):
        try:
            unquoted = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            unquoted = None
        if unquoted is not None and _fits(unquoted, accepted):
            return f"{key} = {toml(unquoted)}, without the quotes"
    example = known[0] if known else {str: "...", int: 1, bool: True, float: 1.0}[accepted[0]]
    return f"e.g. {key} = {toml(example)}"
