"""A tiny document model: the report is built as blocks, then written as Markdown or HTML."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from healer.report.results import Incident

__all__ = [
    "Block",
    "Cell",
    "Code",
    "Heading",
    "Inline",
    "Items",
    "Para",
    "Picture",
    "Pre",
    "Table",
    "code_at",
    "joined",
    "parts",
]


@dataclass(frozen=True, slots=True)
class Code:
    """Literal text: identifiers, keys, ``source:line``."""

    text: str


Inline = str | Code
Cell = Inline | tuple[Inline, ...]


@dataclass(frozen=True, slots=True)
class Heading:
    level: int
    text: tuple[Inline, ...]


@dataclass(frozen=True, slots=True)
class Para:
    text: tuple[Inline, ...]


@dataclass(frozen=True, slots=True)
class Items:
    """A bulleted (or numbered) list."""

    items: tuple[tuple[Inline, ...], ...]
    ordered: bool = False


@dataclass(frozen=True, slots=True)
class Table:
    head: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]


@dataclass(frozen=True, slots=True)
class Pre:
    text: str


@dataclass(frozen=True, slots=True)
class Picture:
    """An incident's timeline picture: drawn by the HTML writer (an inline SVG); the
    Markdown writer leaves it out (its timeline is the text one)."""

    incident: Incident


Block = Heading | Para | Items | Table | Pre | Picture


def parts(cell: Cell) -> tuple[Inline, ...]:
    return cell if isinstance(cell, tuple) else (cell,)


def code_at(kind: str, where: str) -> tuple[Inline, ...]:
    """``kind`` at ``source:line``, both as code."""
    return (Code(kind), " at ", Code(where))


def joined(groups: Iterable[tuple[Inline, ...]]) -> tuple[Inline, ...]:
    """The groups one after another, separated by commas."""
    out: list[Inline] = []
    for group in groups:
        if out:
            out.append(", ")
        out += group
    return tuple(out)
