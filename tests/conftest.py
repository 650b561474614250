"""Shared helpers: the real corpus split into excerpts, and a parser runner."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from healer.events import Event
from healer.parse import SourceParser

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = FIXTURES / "corpus"
GOLDEN = Path(__file__).parent / "golden"

# Syslog headers carry no year; these come from the dates in PROVENANCE.md.
EXCERPT_YEARS = {"VR02": 2024, "VC02": 2020, "VC03": 2020, "VC04": 2020, "KA02": 2021}
EXCERPT_YEARS |= {"KA04": 2020, "GU04": 2025, "VR05": 2023}


@dataclass(frozen=True)
class Excerpt:
    """One ``### id:`` block of a corpus file, as bytes."""

    id: str
    file: str
    body: bytes


def load_excerpts() -> list[Excerpt]:
    excerpts = []
    for path in sorted(CORPUS.glob("*.log")):
        data = path.read_bytes()
        for m in re.finditer(rb"^### id: (\w+)\n(.*?)(?=^### source:|\Z)", data, re.M | re.S):
            body = m.group(2).rstrip(b"\n") + b"\n"
            excerpts.append(Excerpt(m.group(1).decode(), path.name, body))
    return excerpts


EXCERPTS = load_excerpts()


def parse(data: bytes, source: str = "test", *, year: int = 2024) -> list[Event]:
    """All events of ``data`` through the fast path."""
    parser = SourceParser(source, default_year=year)
    return [e for e in parser.parse_all(data) if isinstance(e, Event)]


def parse_excerpt(excerpt: Excerpt) -> list[Event]:
    return parse(excerpt.body, excerpt.id, year=EXCERPT_YEARS.get(excerpt.id, 2024))


@pytest.fixture
def excerpts() -> dict[str, Excerpt]:
    return {e.id: e for e in EXCERPTS}
