"""Golden files: every real corpus excerpt replays to exactly the recorded events.

A change detector, not a judge: the golden files are the code's own output, written by
``HEALER_REGEN_GOLDEN=1`` and reviewed as a diff when regenerated. What the events
should be is tests/test_expectations.py, written by hand from the excerpts; every
excerpt with a golden file has an entry there (checked below).
"""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pytest
from conftest import EXCERPT_YEARS, EXCERPTS, GOLDEN, Excerpt, parse_excerpt

from healer.events import Event, event_from_json, event_to_json
from healer.parse import SourceParser
from healer.parse.stream import is_candidate

REGEN = os.environ.get("HEALER_REGEN_GOLDEN") == "1"


def _render(excerpt: Excerpt) -> bytes:
    return b"".join(event_to_json(e) + b"\n" for e in parse_excerpt(excerpt))


@pytest.mark.parametrize("excerpt", EXCERPTS, ids=lambda e: e.id)
def test_excerpt_matches_golden(excerpt: Excerpt) -> None:
    """The events of each excerpt equal its golden file, byte for byte."""
    path = GOLDEN / f"{excerpt.id}.jsonl"
    actual = _render(excerpt)
    if REGEN:
        path.write_bytes(actual)
    assert path.read_bytes().decode() == actual.decode()


@pytest.mark.parametrize("excerpt", EXCERPTS, ids=lambda e: e.id)
def test_golden_events_round_trip(excerpt: Excerpt) -> None:
    """Every golden event survives JSON -> event -> JSON unchanged."""
    for line in (GOLDEN / f"{excerpt.id}.jsonl").read_bytes().splitlines():
        assert event_to_json(event_from_json(line)) == line


@pytest.mark.parametrize("excerpt", EXCERPTS, ids=lambda e: e.id)
def test_fast_path_equals_line_path(excerpt: Excerpt) -> None:
    """The block prefilter finds the same events as walking every record."""
    year = EXCERPT_YEARS.get(excerpt.id, 2024)
    every = SourceParser(excerpt.id, default_year=year, keep_unrecognized=True)
    slow = [i for i in every.parse_all(excerpt.body) if isinstance(i, Event)]
    assert [event_to_json(e) for e in slow] == [event_to_json(e) for e in parse_excerpt(excerpt)]


@pytest.mark.parametrize("excerpt", EXCERPTS, ids=lambda e: e.id)
def test_every_event_record_holds_a_needle(excerpt: Excerpt) -> None:
    """The prefilter's needles cover every pattern that fired on real text."""
    for event in parse_excerpt(excerpt):
        assert any(is_candidate(line.encode()) for line in event.raw.splitlines())


@pytest.mark.parametrize("excerpt", EXCERPTS, ids=lambda e: e.id)
def test_offsets_point_at_first_line(excerpt: Excerpt) -> None:
    """``offset`` and ``line`` both locate the record's first line in the source."""
    lines = excerpt.body.split(b"\n")
    for event in parse_excerpt(excerpt):
        first = event.raw.split("\n", 1)[0].encode()
        assert excerpt.body[event.offset :].startswith(first)
        assert lines[event.line - 1].rstrip(b"\r") == first


def test_golden_files_have_no_strays() -> None:
    """Each golden file belongs to an excerpt that still exists."""
    ids = {e.id for e in EXCERPTS}
    assert {p.stem for p in GOLDEN.glob("*.jsonl")} == ids


def test_golden_is_valid_json_lines() -> None:
    for path in GOLDEN.glob("*.jsonl"):
        for line in path.read_bytes().splitlines():
            assert set(orjson.loads(line)) >= {"kind", "time", "source", "offset", "line"}


@pytest.mark.parametrize(
    ("name", "excerpt_id"), [("incident-docker.log", "CH01"), ("incident-vm.sh.log", "CH02")]
)
def test_embedded_example_is_the_real_excerpt(name: str, excerpt_id: str) -> None:
    """The README's offline example (`healer replay`) replays the corpus excerpt, byte for byte."""
    example = (Path(__file__).parent.parent / "healer" / "examples" / name).read_bytes()
    (excerpt,) = [e for e in EXCERPTS if e.id == excerpt_id]
    assert example == excerpt.body.replace(b"\n\n", b"\n")


def test_every_golden_excerpt_has_hand_written_expectations() -> None:
    """The golden files cannot be the only check of an excerpt."""
    from test_expectations import EXPECTED  # noqa: PLC0415 - the independent table

    golden = sorted(p.stem for p in GOLDEN.glob("*.jsonl"))
    assert golden  # the directory is there and holds files
    assert [g for g in golden if g not in EXPECTED] == []
