"""The field corpus: real excerpts healer was not written from, read as a careful reader
reads them.

tests/field_corpus/*.log hold excerpts copied byte-exact from public reports (where
each came from: the ``*.provenance.md`` files); the ``*.expect.json`` files say, per
excerpt, which line starts which event, written by hand from the text alone before
the parsers read it. Each excerpt must give exactly those events, in that order,
with the fields and UTC time the expectation states. The excerpts healer still reads
wrongly are listed in MISSES with the cause; they are expected to fail (strictly: one
that starts passing must leave the list), so the share read fully correctly, per
cause, is what tests/field_corpus/README.md states.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from healer.events import Event, to_dict
from healer.parse.stream import Parsed, Repeat, SourceParser

CORPUS = Path(__file__).resolve().parent / "field_corpus"
CHECKED = (  # the fields compared where an expectation gives them
    *("tag", "mountpoint", "socket", "reporter", "signal", "thread", "location", "name"),
    *("vmm_exited", "device_id", "status", "chain", "error_kind", "errno"),
)

MISSES: dict[str, str] = {}


def _excerpts() -> list[tuple[str, bytes, list[dict[str, Any]]]]:
    found = []
    for log in sorted(CORPUS.glob("*.log")):
        expected = json.loads(log.with_name(f"{log.stem}.expect.json").read_text())
        data = log.read_bytes()
        for m in re.finditer(rb"^### id: (\w+)\n(.*?)(?=^### source:|\Z)", data, re.M | re.S):
            name = m.group(1).decode()
            found.append((name, m.group(2).rstrip(b"\n") + b"\n", expected[name]))
    return found


EXCERPTS = _excerpts()


def _parsed(name: str, body: bytes) -> list[Parsed]:
    return SourceParser(name, default_year=2024).parse_all(body)


def _read(name: str, body: bytes) -> list[Event]:
    return [e for e in _parsed(name, body) if isinstance(e, Event)]


@pytest.mark.parametrize(
    ("name", "body", "expected"),
    [
        pytest.param(
            *excerpt,
            id=excerpt[0],
            marks=[pytest.mark.xfail(reason=MISSES[excerpt[0]], strict=True)]
            if excerpt[0] in MISSES
            else [],
        )
        for excerpt in EXCERPTS
    ],
)
def test_each_excerpt_gives_the_events_a_reader_expects(
    name: str, body: bytes, expected: list[dict[str, Any]]
) -> None:
    items = _parsed(name, body)
    events = [e for e in items if isinstance(e, Event)]
    assert [(e.line, e.kind) for e in events] == [(x["line"], x["kind"]) for x in expected]
    repeats = sorted((r.of_line, r.line, r.kind) for r in items if isinstance(r, Repeat))
    cited = [(x["line"], at, x["kind"]) for x in expected for at in x.get("repeated_at", ())]
    assert repeats == sorted(cited)  # one fault told twice: one event, the other line cited
    for event, want in zip(events, expected, strict=True):
        fields = to_dict(event)["fields"]
        for key in CHECKED:
            if key in want["fields"]:
                assert fields.get(key) == want["fields"][key], (event.line, key)
        if want["time"] is not None:
            assert event.time == datetime.fromisoformat(want["time"]), event.line


def test_the_corpus_is_big_enough_and_every_excerpt_has_an_expectation() -> None:
    assert len(EXCERPTS) >= 60
    names = [name for name, _, _ in EXCERPTS]
    assert len(names) == len(set(names))
    for log in CORPUS.glob("*.expect.json"):
        assert set(json.loads(log.read_text())) <= set(names)
    assert set(MISSES) <= set(names)


def test_no_excerpt_line_is_lost_or_merged_across_records() -> None:
    """Every expected event's line exists in its excerpt (the table is about the text)."""
    for name, body, expected in EXCERPTS:
        lines = body.split(b"\n")
        for x in expected:
            assert 1 <= x["line"] <= len(lines), (name, x["line"])


def _rewrap(line: bytes, width: int = 60) -> bytes:
    """A long line cut at its first blank past ``width``, the rest on an indented line
    after `` \\``, the way a reporter fits a log into a terminal or a mail."""
    cut = line.find(b" ", width)
    if cut < 0:
        return line
    return line[:cut] + b" \\\n    " + line[cut + 1 :]


EDITS: dict[str, Callable[[bytes], bytes]] = {  # what people do to a log before pasting
    "markdown quote": lambda line: b"> " + line,
    "mail quote twice": lambda line: b"> > " + line,
    "opening backtick": lambda line: b"`" + line,
    "CRLF": lambda line: line + b"\r",
    "ANSI colour": lambda line: b"\x1b[1;32m" + line + b"\x1b[0m",
    "indented four spaces (a mail)": lambda line: b"    " + line,
    "indented a tab": lambda line: b"\t" + line,
    "shell prompt": lambda line: b"$ " + line,
    "re-wrapped with shell continuations": _rewrap,
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_an_edited_excerpt_gives_the_same_kinds(edit: str) -> None:
    """Every excerpt read correctly is read as the same kinds at the same times once
    quoted, given an opening backtick or a prompt, CRLF endings or colour codes,
    indented as a whole, or re-wrapped."""
    change = EDITS[edit]
    for name, body, _expected in EXCERPTS:
        if name in MISSES:
            continue
        edited = b"\n".join(change(line) if line else line for line in body.split(b"\n"))
        got = [(e.kind, e.time) for e in _read(name, edited)]
        assert got == [(e.kind, e.time) for e in _read(name, body)], name
