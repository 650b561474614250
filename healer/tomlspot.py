"""Line numbers for TOML keys: tomllib gives values only, errors need a place.

Paths are tuples: ``("policy", "seed")``, ``("rule", 2, "on")`` for the third
``[[rule]]``, ``("rule", 2, "where", "error_kind")`` for its ``[rule.where]`` table.
A path not written in the file falls back to its nearest written parent; the name of
an array of tables alone (``("vmm",)``) is its first ``[[vmm]]``.
"""

from __future__ import annotations

import difflib
import json
import re
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

from healer.errors import HealerError

__all__ = ["LocatedError", "Problem", "Spots", "suggest", "toml", "type_name", "wrong_type"]

_KEY = re.compile(r"([A-Za-z0-9_.-]+)\s*=")
_ARRAY = re.compile(r"\[\[\s*([A-Za-z0-9_.-]+)\s*\]\]")
_TABLE = re.compile(r"\[\s*([A-Za-z0-9_.-]+)\s*\]")

Path = tuple[str | int, ...]


class Spots:
    """Where each table and key of one TOML text starts."""

    def __init__(self, text: str) -> None:
        self.lines: dict[Path, int] = {}
        arrays: dict[str, int] = {}
        table: Path = ()
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if m := _ARRAY.match(line):
                name = m.group(1)
                arrays[name] = arrays.get(name, -1) + 1
                table = (name, arrays[name])
                self.lines.setdefault((name,), number)
            elif m := _TABLE.match(line):
                first, *rest = m.group(1).split(".")
                # [rule.where] belongs to the latest [[rule]]
                table = (
                    (first, arrays[first], *rest) if first in arrays and rest else (first, *rest)
                )
            elif m := _KEY.match(line):
                self.lines.setdefault((*table, *m.group(1).split(".")), number)
                continue
            else:
                continue
            self.lines.setdefault(table, number)

    def line(self, *path: str | int) -> int:
        """The line of ``path``, else of its nearest parent, else 1."""
        key: Path = tuple(path)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return 1


@dataclass(frozen=True, slots=True)
class Problem:
    """One located problem: ``file:line: what is wrong (fix: what to do)``."""

    file: str
    line: int
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message} (fix: {self.fix})"


class LocatedError(HealerError):
    """A file cannot be used; ``problems`` says where and how to fix each."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in problems))


def suggest(word: str, options: Iterable[str]) -> str:
    """A 'did you mean' hint for a misspelt key, kind or action."""
    names = list(options)
    match = [n for n in names if word and word in n][:1] or difflib.get_close_matches(
        word, names, n=1
    )
    return f"did you mean {match[0]!r}?" if match else "see docs/configuration.md or docs/rules.md"


def toml(value: Any) -> str:
    """``value`` as it is written in TOML: ``true``, ``"text"``, ``5``, ``["a", 1]``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # a TOML basic string, escapes and all
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + " }"
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return repr(value)


def type_name(value: Any) -> str:
    """What TOML type ``value`` was written as, for a message: "a string", "a list"."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return "a date or time"
    return type(value).__name__


def wrong_type(
    key: str, value: Any, expected: str, example: Any, fits: Callable[[Any], bool]
) -> tuple[str, str]:
    """The message and fix for ``key = value`` of the wrong type: ``count must be an
    integer, not a string ("5")`` and ``write count = 5, without the quotes`` when the
    string's content is what was meant."""
    message = f"{key} must be {expected}, not {type_name(value)} ({toml(value)})"
    if isinstance(value, str):
        try:
            unquoted = tomllib.loads(f"v = {value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            pass
        else:
            if fits(unquoted):
                return message, f"write {key} = {toml(unquoted)}, without the quotes"
    return message, f"e.g. {key} = {toml(example)}"
