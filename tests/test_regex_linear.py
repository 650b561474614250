"""Every parser pattern costs time linear in the line's length (issue 13).

A regex with two unbounded quantifiers over the same characters, or an unbounded
one followed by a literal that may never come, rescans the rest of the line from
every place its prefix occurs: one 64 KiB line then stalls healing for a minute.
The lines here are built from each pattern's own text, the way an attacker (or an
unlucky log) would build them: a needle so the prefilter passes the line, then one
piece of the pattern repeated to the length, inside each wrapper real logs use.

Work is compared, never timed against a threshold: the same line at 16 KiB and at
64 KiB costs 4 times as much when parsing is linear and 16 times when quadratic;
the check fails above 8 (the minimum of several runs, measured again before it
fails, so a noisy machine cannot fail it).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from re import _constants as sre_constants  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

from healer import rusterror
from healer.parse import envelope, stream
from healer.parse.stream import NEEDLES, PATTERNS, SourceParser

SMALL, LARGE = 16 * 1024, 64 * 1024
LINEAR_AT_MOST = 8.0  # linear work gives 4, quadratic 16

# The wrappers a payload arrives in (one %s each): bare, a docker/RFC 3339 stamp,
# a syslog header, a kata logfmt record, cloud-hypervisor's logger, the Rust
# virtiofsd's env_logger, an indented continuation line, an event-monitor object.
FRAMES: tuple[bytes, ...] = (
    b"%s",
    b"2022-01-01T00:00:00.000000Z %s",
    b"Jan  1 00:00:00 host cloud-hypervisor[12]: %s",
    b'time="2022-01-01T00:00:00.000000000Z" level=error msg="%s" source=virtcontainers',
    b"cloud-hypervisor: 1.234567s: <vmm> ERROR:vmm/src/lib.rs:1 -- %s",
    b"[2022-01-01T00:00:00Z ERROR virtiofsd] %s",
    b"Error: virtiofsd failed\n    %s",
    b"{\n%s\n}",
)
# Characters that continue most runs: a word, spaces, brackets and quotes.
FILLERS = ("a", " ", "a ", "{", "(", "<", "'", '"', ":", "=", "0", "\\", "/", ",", "-")


def _literal_runs(parsed: Any) -> Iterator[str]:
    """The literal strings inside a parsed pattern, at any depth."""
    run: list[str] = []
    for op, arg in parsed:
        if op is sre_constants.LITERAL:
            run.append(chr(arg))
            continue
        if run:
            yield "".join(run)
            run = []
        if op is sre_constants.SUBPATTERN:
            yield from _literal_runs(arg[-1])
        elif op in (
            sre_constants.MAX_REPEAT,
            sre_constants.MIN_REPEAT,
            sre_constants.POSSESSIVE_REPEAT,
        ):
            yield from _literal_runs(arg[2])
        elif op is sre_constants.BRANCH:
            for alternative in arg[1]:
                yield from _literal_runs(alternative)
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            yield from _literal_runs(arg[1])
    if run:
        yield "".join(run)


def _example(parsed: Any) -> Iterator[str]:
    """A shortest text each element of the pattern matches, element by element."""
    for op, arg in parsed:
        if op is sre_constants.LITERAL:
            yield chr(arg)
        elif op is sre_constants.NOT_LITERAL:
            yield "x" if arg != ord("x") else "y"
        elif op is sre_constants.IN:
            yield _in_example(arg)
        elif op is sre_constants.ANY:
            yield "x"
        elif op is sre_constants.SUBPATTERN:
            yield "".join(_example(arg[-1]))
        elif op in (
            sre_constants.MAX_REPEAT,
            sre_constants.MIN_REPEAT,
            sre_constants.POSSESSIVE_REPEAT,
        ):
            yield "".join(_example(arg[2])) * max(arg[0], 1)
        elif op is sre_constants.BRANCH:
            yield "".join(_example(arg[1][0]))
        else:  # anchors and assertions take no text
            yield ""


def _in_example(items: Any) -> str:
    negate = any(op is sre_constants.NEGATE for op, _ in items)
    if negate:
        banned = {arg for op, arg in items if op is sre_constants.LITERAL}
        return next(c for c in "xq_" if ord(c) not in banned)
    for op, arg in items:
        if op is sre_constants.LITERAL:
            return chr(arg)
        if op is sre_constants.RANGE:
            return chr(arg[0])
        if op is sre_constants.CATEGORY:
            return {"CATEGORY_DIGIT": "0", "CATEGORY_SPACE": " "}.get(str(arg), "a")
    return "a"


def _near_matches(parsed: Any) -> Iterator[str]:
    """Prefixes of a matching text, cut before each element that is not a literal."""
    items = list(parsed)
    if len(items) == 1 and items[0][0] is sre_constants.BRANCH:
        for alternative in items[0][1][1]:
            yield from _near_matches(alternative)
        return
    if len(items) == 1 and items[0][0] is sre_constants.SUBPATTERN:
        yield from _near_matches(items[0][1][-1])
        return
    parts = list(_example(items))
    for cut in range(1, len(items)):
        if items[cut][0] is not sre_constants.LITERAL or cut == len(items) - 1:
            yield "".join(parts[:cut])


def _pieces(pattern: re.Pattern[str]) -> set[str]:
    """What a worst-case line repeats: the pattern's literals and its near matches.

    A near match is a prefix of a matching text that stops before the pattern's
    end: repeated, it makes every unbounded element scan on and then give up.
    """
    parsed = sre_parse.parse(pattern.pattern, pattern.flags)
    pieces = {run for run in _literal_runs(parsed) if run.strip()}
    pieces.update(_near_matches(parsed))
    return {p for p in pieces if p}


def _all_patterns() -> list[re.Pattern[str]]:
    """Every str pattern a candidate line meets: messages, wrappers, error chains."""
    found: list[re.Pattern[str]] = [pattern for (pattern, _), _ in PATTERNS]
    for module in (envelope, stream, rusterror):
        for value in vars(module).values():
            if isinstance(value, re.Pattern) and isinstance(value.pattern, str):
                found.append(value)
    return found


def _lines() -> list[bytes]:
    """The pieces worst-case lines repeat, from every pattern, and the fillers."""
    pieces: set[str] = set(FILLERS)
    for pattern in _all_patterns():
        pieces |= _pieces(pattern)
    return sorted(p.encode() for p in pieces)


def _line(frame: bytes, needle: bytes, piece: bytes, size: int) -> bytes:
    body = needle + b" " + piece * ((size - len(needle)) // len(piece) + 1)
    return frame.replace(b"%s", body[:size]) + b"\n"


def _cost(data: bytes, runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        parser = SourceParser("attack", default_year=2022)
        start = time.perf_counter()
        parser.parse_all(data)
        best = min(best, time.perf_counter() - start)
    return best


def _ratio(frame: bytes, needle: bytes, piece: bytes, runs: int) -> float:
    small = _cost(_line(frame, needle, piece, SMALL), runs)
    large = _cost(_line(frame, needle, piece, LARGE), runs)
    return large / small


def test_the_worst_case_lines_are_built_from_every_pattern() -> None:
    # the generator must see the patterns the issue named as quadratic
    pieces = _lines()
    assert b": Main process exited, code=" in pieces  # systemd's prefix pattern
    assert b"Corrupted request detected (" in pieces  # cloud-hypervisor's NEEDS_RESET
    assert b"virtio-fs: tag <" in pieces
    assert len(pieces) > 150


def test_every_pattern_costs_linear_work_in_the_line_length() -> None:
    needle = b"panicked at"  # any needle makes the line a candidate; parsing is the same
    assert needle in NEEDLES
    slow: list[tuple[bytes, bytes, float]] = []
    for piece in _lines():
        for frame in FRAMES:
            ratio = _ratio(frame, needle, piece, runs=2)
            if ratio > LINEAR_AT_MOST:  # measure again, harder, before calling it quadratic
                ratio = min(_ratio(frame, needle, piece, runs=5) for _ in range(3))
            if ratio > LINEAR_AT_MOST:
                slow.append((frame, piece, round(ratio, 1)))
    assert slow == []
