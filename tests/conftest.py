"""Shared helpers: the real corpus split into excerpts, and a parser runner."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from healer.events import Event
from healer.parse import SourceParser
from healer.supervise import find_virtiofsd

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


def wait_for(condition: Callable[[], object], limit_s: float = 20.0) -> None:
    """Poll a condition with a bounded wait (no timing is asserted)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached within the bound")
        time.sleep(0.005)


@pytest.fixture
def virtiofsd() -> tuple[str, str]:
    """The installed virtiofsd; missing it skips, or fails under CI=true (no silent skips)."""
    found = find_virtiofsd()
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "virtiofsd is required in CI: apt-get install qemu-system-common (Debian 12)"
            )
        pytest.skip("virtiofsd is not installed (apt-get install qemu-system-common)")
    return found


def _required(program: str, package: str) -> str:
    """An installed program; missing it skips, or fails under CI=true (no silent skips)."""
    found = shutil.which(program)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{program} is required in CI: apt-get install {package}")
        pytest.skip(f"{program} is not installed (apt-get install {package})")
    return found


@pytest.fixture
def promtool() -> str:
    """Prometheus' promtool (Debian package prometheus)."""
    return _required("promtool", "prometheus")


@pytest.fixture
def prometheus() -> str:
    """The Prometheus server (Debian package prometheus)."""
    return _required("prometheus", "prometheus")
