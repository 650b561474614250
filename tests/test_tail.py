"""The tailer: whole lines with exact offsets across appends, rotation, truncation, restarts."""

from __future__ import annotations

import errno
import itertools
import json
import os
import queue
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

import pytest
from conftest import EXCERPT_YEARS, EXCERPTS, Excerpt, parse_excerpt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from healer.events import Event, event_to_json
from healer.parse import SourceParser
from healer.sources.notify import watch_files, watch_inotify
from healer.sources.tail import FileTailer
from healer.sources.tailtypes import FileIdentity, TailBatch, TailPosition, fingerprint

# --- helpers ----------------------------------------------------------------------


def lines_of(batches: list[TailBatch]) -> bytes:
    return b"".join(b.block for b in batches if b.kind == "lines")


def markers(batches: list[TailBatch]) -> list[tuple[str, str]]:
    return [(b.kind, b.reason) for b in batches if b.kind != "lines"]


def drain(tailer: FileTailer) -> list[TailBatch]:
    """Poll until the tailer has caught up (it stops at its byte budget)."""
    out: list[TailBatch] = []
    for _ in range(10_000):
        out += tailer.poll()
        if tailer.at_eof:
            return out
    raise AssertionError("the tailer never caught up")


def assert_offsets(batches: list[TailBatch], data: bytes) -> None:
    """Every block lies in ``data`` at its offset, byte for byte."""
    for b in batches:
        if b.kind == "lines":
            assert data[b.offset : b.offset + len(b.block)] == b.block


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def journal(position: TailPosition) -> TailPosition:
    """What a restart reads back: the position through JSON."""
    return TailPosition.from_dict(json.loads(json.dumps(position.to_dict())))


line_bytes = st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"."))
logs = st.lists(line_bytes, max_size=25).map(lambda ls: b"".join(x + b"\n" for x in ls))


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


unfinished_logs = st.tuples(logs, line_bytes).map(b"".join)  # ends in a partial line


def complete(data: bytes) -> bytes:
    return data[: data.rfind(b"\n") + 1]


# --- records ----------------------------------------------------------------------


def test_position_round_trips_through_json() -> None:
    """A position survives the journal, with and without a file and a fingerprint."""
    for position in (
        TailPosition(FileIdentity(2049, 131, "0123456789abcdef"), 4096),
        TailPosition(FileIdentity(2049, 131, None), 0),
        TailPosition(None, 0),
    ):
        assert position == journal(position)


def test_fingerprint_waits_for_a_first_line() -> None:
    """No fingerprint until the first line ends or reaches the limit."""
    assert fingerprint(b"", 8) is None
    assert fingerprint(b"abc", 8) is None
    assert fingerprint(b"abc\nxyz", 8) == fingerprint(b"abc\nother", 8)
    assert fingerprint(b"abcdefgh", 8) == fingerprint(b"abcdefghij", 8)
    assert fingerprint(b"abc\n", 8) != fingerprint(b"abd\n", 8)


def test_invalid_settings_are_refused(tmp_path: Path) -> None:
    """Zero-sized lines, chunks or fingerprints make no sense."""
    with pytest.raises(ValueError, match="max_line_bytes"):
        FileTailer(tmp_path / "a.log", max_line_bytes=0)


# --- appends ----------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    data=unfinished_logs,
    cuts=st.lists(st.integers(min_value=0), max_size=12),
    poll_after=st.lists(st.booleans(), min_size=30, max_size=30),
    chunk_size=st.sampled_from([1, 3, 64, 1 << 20]),
    budget=st.sampled_from([None, 5]),
)
def test_small_writes_give_exactly_the_complete_lines(
    data: bytes,
    cuts: list[int],
    poll_after: list[bool],
    chunk_size: int,
    budget: int | None,
) -> None:
    """Appends in any pieces: the blocks are the complete lines written, at exact offsets."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "a.log"
        tailer = FileTailer(path, chunk_size=chunk_size, max_bytes_per_poll=budget)
        got: list[TailBatch] = []
        written = b""
        for i, piece in enumerate(split(data, cuts)):
            append(path, piece)
            written += piece
            if poll_after[i % len(poll_after)]:
                got += drain(tailer)
                assert complete(written) == lines_of(got)
        got += drain(tailer)

        assert complete(data) == lines_of(got)
        assert_offsets(got, data)
        if data:  # else no file was ever created
            assert markers(got) == [("start", "new")]
            assert TailPosition(got[-1].identity, len(complete(data))) == tailer.position


def test_budget_bounds_one_poll(tmp_path: Path) -> None:
    """A poll returns at most its budget (plus a line); ``at_eof`` says to poll again."""
    path = tmp_path / "a.log"
    data = b"".join(b"line %04d\n" % i for i in range(1000))
    path.write_bytes(data)
    tailer = FileTailer(path, chunk_size=100, max_bytes_per_poll=1000)

    first = tailer.poll()

    assert not tailer.at_eof
    assert len(lines_of(first)) <= 1000
    assert data == lines_of(first + drain(tailer))


def test_bytes_pass_through(tmp_path: Path) -> None:
    """Invalid UTF-8, NUL bytes and carriage returns are just bytes."""
    path = tmp_path / "a.log"
    data = b"\xff\xfe\xc3\x28 bad utf-8\n\x00\x00\x00\nwindows\r\n\n\x1b[31mred\x1b[0m\n"
    path.write_bytes(data)

    got = FileTailer(path).poll()

    assert data == lines_of(got)


def test_long_lines_are_cut_and_counted(tmp_path: Path) -> None:
    """A line over the cap is cut, counted, ends its block, and later offsets stay exact."""
    path = tmp_path / "a.log"
    data = b"a\n" + b"y" * 30 + b"\nb\n"
    path.write_bytes(data)
    tailer = FileTailer(path, max_line_bytes=8, fingerprint_bytes=4)

    got = tailer.poll()

    assert [b.block for b in got if b.kind == "lines"] == [b"a\nyyyyyyyy\n", b"b\n"]
    assert got[-1].offset == data.index(b"b\n")
    assert tailer.stats.lines_cut == 1


def test_long_partial_line_is_cut_before_its_newline(tmp_path: Path) -> None:
    """An over-long line still growing is cut at once; its rest is skipped, not held."""
    path = tmp_path / "a.log"
    tailer = FileTailer(path, max_line_bytes=8, fingerprint_bytes=4)
    append(path, b"short\n" + b"x" * 12)

    first = tailer.poll()
    append(path, b"x" * 20)
    middle = tailer.poll()
    append(path, b"x" * 3 + b"\nafter\n")
    last = tailer.poll()

    assert lines_of(first) == b"short\nxxxxxxxx\n"
    assert lines_of(middle) == b""
    assert [b.block for b in last if b.kind == "lines"] == [b"after\n"]
    assert last[-1].offset == 6 + 35 + 1
    assert tailer.stats.lines_cut == 1
    assert tailer.position.offset == 6 + 36 + 6


# --- rotation, truncation, deletion -------------------------------------------------


@pytest.mark.parametrize("late", [False, True], ids=["quiet", "late-writes"])
def test_rename_and_create_rotation(tmp_path: Path, late: bool) -> None:
    """The old file is read to its end (late writes included), then the new one from 0."""
    path, old = tmp_path / "a.log", tmp_path / "a.log.1"
    path.write_bytes(b"one\ntwo\n")
    tailer = FileTailer(path)
    first = tailer.poll()
    append(path, b"three\n")
    path.rename(old)
    if late:
        append(old, b"late\n")
    path.write_bytes(b"new\n")

    got = tailer.poll()

    assert markers(first) == [("start", "new")]
    assert b"three\n" + (b"late\n" if late else b"") + b"new\n" == lines_of(got)
    assert markers(got) == [("end", "rotated"), ("start", "rotated")]
    end = next(b for b in got if b.kind == "end")
    assert end.identity == first[0].identity
    assert end.offset == old.stat().st_size
    assert (got[-1].offset, got[-1].block) == (0, b"new\n")
    assert got[-1].identity.inode == path.stat().st_ino
    assert tailer.stats.rotations == 1
    # Written to the old file after the switch: not read (as in mtail); documented.
    append(old, b"too late\n")
    assert tailer.poll() == []


@pytest.mark.parametrize("how", ["rename", "delete"])
def test_partial_line_is_flushed_when_its_file_goes(tmp_path: Path, how: str) -> None:
    """A partial last line is returned, with a newline, once its file is gone."""
    path = tmp_path / "a.log"
    path.write_bytes(b"a\nparti")
    tailer = FileTailer(path)
    assert lines_of(tailer.poll()) == b"a\n"
    if how == "rename":
        path.rename(tmp_path / "a.log.1")
    else:
        path.unlink()

    got = tailer.poll()

    assert lines_of(got) == b"parti\n"
    assert got[0].offset == 2
    assert markers(got) == [("end", "rotated")]
    assert got[-1].offset == len(b"a\nparti")
    assert tailer.stats.partial_lines_flushed == 1
    assert TailPosition(None, 0) == tailer.position


@pytest.mark.parametrize("rewrite", [b"x\n", b"a much longer first line than before\nand more\n"])
def test_copytruncate(tmp_path: Path, rewrite: bytes) -> None:
    """Truncation restarts at 0 and is counted, whether the rewrite is shorter or longer."""
    path = tmp_path / "a.log"
    path.write_bytes(b"one\ntwo\nthr")
    tailer = FileTailer(path)
    assert lines_of(tailer.poll()) == b"one\ntwo\n"
    shutil.copy(path, tmp_path / "a.log.1")
    with path.open("r+b") as f:
        f.truncate(0)
    append(path, rewrite)

    got = tailer.poll()

    assert b"thr\n" + rewrite == lines_of(got)
    assert markers(got) == [("end", "truncated"), ("start", "truncated")]
    assert got[-1].offset == 0
    assert_offsets(got[2:], rewrite)
    assert tailer.stats.truncations == 1
    assert TailPosition(got[-1].identity, len(rewrite)) == tailer.position


def test_truncated_to_empty(tmp_path: Path) -> None:
    """A file emptied and left empty is a truncation, and then simply grows again."""
    path = tmp_path / "a.log"
    path.write_bytes(b"one\n")
    tailer = FileTailer(path)
    tailer.poll()
    path.write_bytes(b"")

    assert markers(tailer.poll()) == [("end", "truncated"), ("start", "truncated")]
    append(path, b"two\n")
    assert lines_of(tailer.poll()) == b"two\n"
    assert tailer.stats.truncations == 1


@pytest.mark.parametrize("poll_between", [True, False])
def test_delete_and_recreate_is_a_new_file(tmp_path: Path, poll_between: bool) -> None:
    """A deleted and recreated file is read from 0, with a start marker."""
    path = tmp_path / "a.log"
    path.write_bytes(b"old\n")
    tailer = FileTailer(path)
    tailer.poll()
    path.unlink()
    got = tailer.poll() if poll_between else []
    path.write_bytes(b"new\n")
    got += tailer.poll()

    assert lines_of(got) == b"new\n"
    assert markers(got) == [("end", "rotated"), ("start", "rotated")]
    assert tailer.position.identity is not None
    assert tailer.position.identity.inode == path.stat().st_ino


def test_file_that_appears_later(tmp_path: Path) -> None:
    """A path that does not exist yet (nor its directory) is no error; it is read from 0."""
    path = tmp_path / "later" / "a.log"
    tailer = FileTailer(path)

    assert tailer.poll() == []
    assert tailer.poll() == []
    path.parent.mkdir()
    path.write_bytes(b"hello\n")
    got = tailer.poll()

    assert markers(got) == [("start", "new")]
    assert lines_of(got) == b"hello\n"
    assert (tailer.stats.read_errors, tailer.stats.files_opened) == (0, 1)


def test_unreadable_for_a_while(tmp_path: Path) -> None:
    """EACCES is counted and retried at the next poll, never raised."""
    path = tmp_path / "a.log"
    path.write_bytes(b"one\n")
    denied = [True]

    def opener(p: Path) -> int:
        if denied[0]:
            raise PermissionError(errno.EACCES, "Permission denied", str(p))
        return os.open(p, os.O_RDONLY)

    tailer = FileTailer(path, opener=opener)
    assert tailer.poll() == []
    assert tailer.poll() == []
    denied[0] = False
    got = tailer.poll()

    assert lines_of(got) == b"one\n"
    assert tailer.stats.read_errors == 2
    assert isinstance(tailer.last_error, PermissionError)


def test_successor_unreadable_for_a_while(tmp_path: Path) -> None:
    """The old file is finished at once; the unreadable new one is retried."""
    path = tmp_path / "a.log"
    path.write_bytes(b"one\n")
    denied = [False]

    def opener(p: Path) -> int:
        if denied[0]:
            raise PermissionError(errno.EACCES, "Permission denied", str(p))
        return os.open(p, os.O_RDONLY)

    tailer = FileTailer(path, opener=opener)
    tailer.poll()
    append(path, b"two\n")
    path.rename(tmp_path / "a.log.1")
    path.write_bytes(b"three\n")
    denied[0] = True
    got = tailer.poll()
    denied[0] = False
    got += tailer.poll()

    assert lines_of(got) == b"two\nthree\n"
    assert markers(got) == [("end", "rotated"), ("start", "rotated")]
    assert tailer.stats.read_errors == 1


def test_directory_in_place_of_the_file(tmp_path: Path) -> None:
    """A directory where the log should be is an error counted and retried (works as root)."""
    path = tmp_path / "a.log"
    path.mkdir()
    tailer = FileTailer(path)

    assert tailer.poll() == []
    assert tailer.stats.read_errors == 1
    assert isinstance(tailer.last_error, OSError)
    assert tailer.last_error.errno == errno.EISDIR
    path.rmdir()
    path.write_bytes(b"one\n")
    assert lines_of(tailer.poll()) == b"one\n"


def test_read_errors_are_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An I/O error while reading is counted; the next poll continues where it stopped."""
    path = tmp_path / "a.log"
    path.write_bytes(b"one\ntwo\n")
    tailer = FileTailer(path)
    tailer.poll()
    append(path, b"three\n")
    real = os.pread
    failures = [2]

    def pread(fd: int, n: int, offset: int) -> bytes:
        if failures[0]:
            failures[0] -= 1
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    got = tailer.poll() + tailer.poll() + tailer.poll()

    assert lines_of(got) == b"three\n"
    assert tailer.stats.read_errors == 2


def test_rotated_file_that_keeps_failing_is_given_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rotated-away file that cannot be read does not hold up its successor forever."""
    path = tmp_path / "a.log"
    path.write_bytes(b"one\n")
    tailer = FileTailer(path)
    tailer.poll()
    old_inode = path.stat().st_ino
    append(path, b"two\n")
    path.rename(tmp_path / "a.log.1")
    path.write_bytes(b"new\n")
    real = os.pread

    def pread(fd: int, n: int, offset: int) -> bytes:
        if os.fstat(fd).st_ino == old_inode:
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, n, offset)

    monkeypatch.setattr(os, "pread", pread)
    stuck = tailer.poll() + tailer.poll()
    got = tailer.poll()

    assert stuck == []
    assert lines_of(got) == b"new\n"
    assert markers(got) == [("end", "rotated"), ("start", "rotated")]
    assert tailer.stats.read_errors == 3


def test_head_follows_bytes_read_in_a_race(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes appended between opening and reading still guard against a later rewrite."""
    path = tmp_path / "a.log"
    path.write_bytes(b"")
    real = os.pread
    heads = [0]

    def pread(fd: int, n: int, offset: int) -> bytes:
        data = real(fd, n, offset)
        heads[0] += 1
        if heads[0] == 2:  # opened, head checked, not yet read: a writer comes in
            append(path, b"1|first\n")
        return data

    monkeypatch.setattr(os, "pread", pread)
    tailer = FileTailer(path)
    assert lines_of(tailer.poll()) == b"1|first\n"
    path.write_bytes(b"2|rewritten, and longer\n")

    got = tailer.poll()

    assert markers(got) == [("end", "truncated"), ("start", "truncated")]
    assert lines_of(got) == b"2|rewritten, and longer\n"


# --- resuming -----------------------------------------------------------------------


@settings(max_examples=150, deadline=None)
@given(
    data=unfinished_logs,
    cuts=st.lists(st.integers(min_value=0), max_size=10),
    stop_after=st.integers(min_value=0, max_value=12),
)
def test_resume_after_any_poll(data: bytes, cuts: list[int], stop_after: int) -> None:
    """Stop after any poll, resume from the journaled position: every line exactly once."""
    pieces = split(data, cuts)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "a.log"
        tailer = FileTailer(path)
        got: list[TailBatch] = []
        for piece in pieces[:stop_after]:
            append(path, piece)
            got += tailer.poll()
        position = journal(tailer.position)
        tailer.close()
        for piece in pieces[stop_after:]:
            append(path, piece)
        resumed = FileTailer(path, start=position)
        again = drain(resumed)

        assert complete(data) == lines_of(got) + lines_of(again)
        if position.identity is not None:
            assert markers(again) == []  # the same file goes on: no new parser
        assert_offsets(got + again, data)


@pytest.mark.parametrize("late", [b"", b"late\n", b"late\npartial"])
def test_resume_across_a_rotation_while_down(tmp_path: Path, late: bytes) -> None:
    """Rotated while down: the rest of the old file (found by identity), then the new one."""
    path, old = tmp_path / "a.log", tmp_path / "a.log.1"
    path.write_bytes(b"one\ntw")
    tailer = FileTailer(path)
    assert lines_of(tailer.poll()) == b"one\n"
    position = journal(tailer.position)
    tailer.close()
    append(path, b"o\n")
    path.rename(old)
    append(old, late)
    (tmp_path / "a.log.2.gz").write_bytes(b"\x1f\x8b older, compressed")
    path.write_bytes(b"new\n")

    resumed = FileTailer(path, start=position)
    got = drain(resumed)

    rest = b"two\n" + late + (b"\n" if late.endswith(b"partial") else b"")
    assert rest + b"new\n" == lines_of(got)
    assert markers(got) == [("end", "rotated"), ("start", "rotated")]
    assert got[0].offset == 4
    assert resumed.stats.rotations == 1


def test_resume_when_the_old_file_is_gone(tmp_path: Path) -> None:
    """The journaled file cannot be found: its end is reported missing, the new file read."""
    path = tmp_path / "a.log"
    path.write_bytes(b"one\n")
    tailer = FileTailer(path)
    tailer.poll()
    position = journal(tailer.position)
    tailer.close()
    # Both made while the old file exists, so neither can reuse its inode.
    (tmp_path / "a.log.1").write_bytes(b"one\n")  # same content, another file
    (tmp_path / "tmp").write_bytes(b"new\n")
    path.unlink()
    (tmp_path / "tmp").rename(path)

    got = drain(FileTailer(path, start=position))

    assert lines_of(got) == b"new\n"
    assert markers(got) == [("end", "missing"), ("start", "rotated")]
    assert got[0].offset == 4


def test_resume_after_copytruncate_while_down(tmp_path: Path) -> None:
    """Same inode, other content: a truncation; the file is read again from 0."""
    path = tmp_path / "a.log"
    path.write_bytes(b"one\ntwo\n")
    tailer = FileTailer(path)
    tailer.poll()
    position = journal(tailer.position)
    tailer.close()
    with path.open("r+b") as f:
        f.truncate(0)
    append(path, b"a longer first line\n")

    resumed = FileTailer(path, start=position)
    got = drain(resumed)

    assert lines_of(got) == b"a longer first line\n"
    assert markers(got) == [("end", "truncated"), ("start", "truncated")]
    assert resumed.stats.truncations == 1


def test_resume_does_not_trust_a_reused_inode(tmp_path: Path) -> None:
    """An inode now holding another file (another fingerprint) is not continued."""
    path = tmp_path / "a.log"
    path.write_bytes(b"someone else's first line\nsecond\n")
    st_ = path.stat()
    position = TailPosition(FileIdentity(st_.st_dev, st_.st_ino, fingerprint(b"mine\n", 1024)), 5)

    got = drain(FileTailer(path, start=position))

    assert path.read_bytes() == lines_of(got)
    assert got[-1].offset == 0


def test_resume_is_retried_while_unreadable(tmp_path: Path) -> None:
    """A resume that cannot look at the file yet keeps its position and tries again."""
    path = tmp_path / "a.log"
    path.write_bytes(b"one\n")
    tailer = FileTailer(path)
    tailer.poll()
    position = journal(tailer.position)
    tailer.close()
    append(path, b"two\n")
    denied = [True]

    def opener(p: Path) -> int:
        if denied[0]:
            raise PermissionError(errno.EACCES, "Permission denied", str(p))
        return os.open(p, os.O_RDONLY)

    resumed = FileTailer(path, start=position, opener=opener)
    assert resumed.poll() == []
    assert position == resumed.position
    denied[0] = False

    assert lines_of(resumed.poll()) == b"two\n"


def _parse_live(
    pieces: list[bytes], path: Path, source: str, year: int, stop_at: int
) -> list[bytes]:
    """Tail ``pieces`` into a parser, restart from the journal after ``stop_at`` of them."""
    events: list[bytes] = []

    def run(parser: SourceParser, tailer: FileTailer, todo: list[bytes]) -> SourceParser:
        for piece in todo:
            append(path, piece)
            for batch in drain(tailer):
                if batch.kind == "start":
                    parser = SourceParser(source, default_year=year)
                elif batch.kind == "lines":
                    out = parser.feed(batch.block, batch.offset)
                    events.extend(event_to_json(e) for e in out if isinstance(e, Event))
        return parser

    tailer = FileTailer(path)
    parser = run(SourceParser(source, default_year=year), tailer, pieces[:stop_at])
    # The journal holds the parser's checkpoint and the identity of its file.
    checkpoint = parser.checkpoint()
    saved = journal(TailPosition(tailer.position.identity, checkpoint.offset))
    tailer.close()
    resumed = SourceParser(source, default_year=year, resume=checkpoint)
    resumed = run(resumed, FileTailer(path, start=saved), pieces[stop_at:])
    events.extend(event_to_json(e) for e in resumed.close() if isinstance(e, Event))
    return events


@pytest.mark.parametrize(
    "excerpt", [e for e in EXCERPTS if len(parse_excerpt(e)) >= 2][:8], ids=lambda e: e.id
)
def test_resume_at_the_parser_checkpoint(tmp_path: Path, excerpt: Excerpt) -> None:
    """Journaling the parser checkpoint with the file identity replays no event twice."""
    year = EXCERPT_YEARS.get(excerpt.id, 2024)
    whole = SourceParser(excerpt.id, default_year=year)
    expected = [event_to_json(e) for e in whole.parse_all(excerpt.body) if isinstance(e, Event)]
    pieces = split(excerpt.body, list(range(0, len(excerpt.body), 61)))

    for stop_at in (1, len(pieces) // 2, len(pieces) - 1):
        path = tmp_path / f"{stop_at}.log"
        assert expected == _parse_live(pieces, path, excerpt.id, year, stop_at)


# --- a model of the world --------------------------------------------------------------


class Gen:
    """One content of a file: a new file, or a file after a truncation."""

    def __init__(self, fd: int, inode: int) -> None:
        self.fd, self.inode = fd, inode
        self.content = bytearray()
        self.opened = False  # the tailer has seen it at the path
        self.held = False  # the tailer holds its descriptor (not after a restart)
        self.finished_at: int | None = None  # where the tailer stopped for good
        self.seen = 0  # size at the last poll
        self.done = 0  # end of the last complete line at the last poll
        self.fingerprinted = True  # the journaled identity had a fingerprint
        self.where: str | None = "path"  # "path", "old" (renamed) or None

    def expected(self) -> list[bytes]:
        end = self.seen if self.finished_at is None else self.finished_at
        *lines, rest = bytes(self.content[:end]).split(b"\n")
        out = [line + b"\n" for line in lines]
        if self.finished_at is not None and rest:
            out.append(rest + b"\n")  # a partial line flushed when the file went
        return out


class TailerMachine(RuleBasedStateMachine):
    """Writes, partial writes, rotations, truncations, deletions, restarts and polls.

    The writer keeps every file it created open, so no inode is reused during a run
    (inode reuse is tested on its own above). Each line starts with a unique tag
    ``<n>|``, so lines are unique and two files never share a first line.
    """

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp())
        self.path, self.old = self.dir / "app.log", self.dir / "app.log.1"
        self.gens: list[Gen] = []
        self.cur: Gen | None = None  # the file at the path
        self.rot: Gen | None = None  # the file renamed to path.1
        self.open_line = False  # the last write left a partial line
        self.tag = 0
        self.got: list[bytes] = []
        self.tailer = self._tailer(None)

    def _tailer(self, start: TailPosition | None) -> FileTailer:
        return FileTailer(
            self.path, start=start, chunk_size=7, max_bytes_per_poll=23, fingerprint_bytes=16
        )

    def teardown(self) -> None:
        self.tailer.close()
        for fd in {gen.fd for gen in self.gens}:  # a truncated file keeps its descriptor
            os.close(fd)
        shutil.rmtree(self.dir)

    # --- the writer ----------------------------------------------------------------

    def _create(self) -> Gen:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND)
        gen = Gen(fd, os.fstat(fd).st_ino)
        self.gens.append(gen)
        self.cur = gen
        self.open_line = False
        return gen

    def _write(self, gen: Gen, data: bytes) -> None:
        os.write(gen.fd, data)
        gen.content += data

    def _next_tag(self) -> bytes:
        self.tag += 1
        return b"%d|" % self.tag

    def _gone(self, gen: Gen) -> None:
        gen.where = None
        if gen.opened and gen.finished_at is None and not gen.held:
            gen.finished_at = gen.done  # never found again: the unread rest is lost

    @rule(n=st.integers(1, 3), payload=line_bytes)
    def write(self, n: int, payload: bytes) -> None:
        gen = self.cur if self.cur is not None else self._create()
        data = b"+end\n" if self.open_line else b""
        self.open_line = False
        for _ in range(n):
            data += self._next_tag() + payload + b"\n"
        self._write(gen, data)

    @rule(piece=line_bytes)
    def write_partial(self, piece: bytes) -> None:
        gen = self.cur if self.cur is not None else self._create()
        data = piece if self.open_line else self._next_tag() + piece
        self.open_line = True
        self._write(gen, data)

    @precondition(lambda self: self.rot is not None and self.rot.where == "old")
    @rule(payload=line_bytes)
    def append_to_rotated(self, payload: bytes) -> None:
        assert self.rot is not None
        self._write(self.rot, self._next_tag() + payload + b"\n")

    @precondition(lambda self: self.cur is not None)
    @rule()
    def rotate(self) -> None:
        assert self.cur is not None
        self.path.rename(self.old)
        if self.rot is not None and self.rot.where == "old":
            self._gone(self.rot)  # overwritten by the rename
        self.rot, self.cur.where = self.cur, "old"
        self._create()

    @precondition(lambda self: self.cur is not None)
    @rule()
    def delete(self) -> None:
        assert self.cur is not None
        self.path.unlink()
        self._gone(self.cur)
        self.cur = None
        self.open_line = False

    @precondition(lambda self: self.cur is not None)
    @rule()
    def truncate(self) -> None:
        gen = self.cur
        assert gen is not None
        os.ftruncate(gen.fd, 0)
        self.open_line = False
        # Whether the tailer can tell a truncation from a file that goes on: only if
        # it consumed bytes (held) or journaled a fingerprint (after a restart).
        if not gen.opened or (gen.held and gen.seen == 0) or not (gen.held or gen.fingerprinted):
            gen.content.clear()
            return
        gen.finished_at = gen.seen if gen.held else gen.done
        gen.where = None
        after = Gen(gen.fd, gen.inode)
        after.opened = after.held = gen.held  # a held descriptor sees the new content
        self.gens.append(after)
        self.cur = after

    # --- the tailer ----------------------------------------------------------------

    @rule()
    def poll(self) -> None:
        batches = drain(self.tailer)
        for gen in self.gens:
            if gen.opened and gen.finished_at is None and gen.where != "path":
                gen.finished_at = len(gen.content)  # read to its end, then finished
                gen.held = False
        if self.cur is not None:
            cur = self.cur
            cur.opened = cur.held = True
            cur.seen = len(cur.content)
            cur.done = bytes(cur.content).rfind(b"\n") + 1
        self.got += [b.block for b in batches if b.kind == "lines"]
        for b in batches:
            if b.kind == "lines":
                assert any(
                    bytes(g.content[b.offset : b.offset + len(b.block) - 1]) == b.block[:-1]
                    for g in self.gens
                    if g.inode == b.identity.inode
                )
        expected = [line for g in self.gens if g.opened for line in g.expected()]
        assert expected == [line + b"\n" for line in b"".join(self.got).split(b"\n")[:-1]]
        position = self.tailer.position
        if self.cur is None:
            assert position.identity is None
        else:
            assert position.identity is not None
            assert (self.cur.inode, self.cur.done) == (position.identity.inode, position.offset)

    @rule()
    def restart(self) -> None:
        """Stop right after a poll (what the old tailer would do next is nothing)."""
        self.poll()
        position = journal(self.tailer.position)
        self.tailer.close()
        self.tailer = self._tailer(position)
        if self.cur is not None:
            assert position.identity is not None
            self.cur.held = False
            self.cur.fingerprinted = position.identity.fingerprint is not None

    @invariant()
    def never_raises_nor_errs(self) -> None:
        assert self.tailer.stats.read_errors == 0


TailerMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_tailer_model = TailerMachine.TestCase


# --- notifications -----------------------------------------------------------------


def _collect(it: Iterator[set[Path]], into: queue.Queue[set[Path]]) -> None:
    for item in it:
        into.put(item)


def _next_matching(q: queue.Queue[set[Path]], ok: Callable[[set[Path]], bool]) -> set[Path]:
    for _ in range(200):  # bounded: each get waits at most a few seconds
        item = q.get(timeout=5)
        if ok(item):
            return item
    raise AssertionError("the expected notification never came")


class Watch(Protocol):
    """What both watchers offer: changed paths, an empty set on each poll tick."""

    def __call__(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        stop: threading.Event,
        poll_interval_s: float = ...,
    ) -> Iterator[set[Path]]: ...


WATCHERS: dict[str, Watch] = {"watchfiles": watch_files, "inotify": watch_inotify}


@pytest.mark.parametrize("kind", sorted(WATCHERS))
def test_watch_files_reports_writes_and_ticks(tmp_path: Path, kind: str) -> None:
    """A write to a watched file is reported; an empty set comes as the periodic poll tick."""
    path = tmp_path / "a.log"
    stop = threading.Event()
    got: queue.Queue[set[Path]] = queue.Queue()
    watch = WATCHERS[kind]
    watcher = threading.Thread(
        target=_collect, args=(watch([path], stop=stop, poll_interval_s=0.2), got)
    )
    watcher.start()
    try:
        _next_matching(got, lambda s: not s)  # the watcher is up and ticking
        (tmp_path / "other.txt").write_bytes(b"not watched\n")
        path.write_bytes(b"hello\n")

        assert {path} == _next_matching(got, bool)
        assert set() == _next_matching(got, lambda s: not s)
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert not watcher.is_alive()


@pytest.mark.parametrize("kind", sorted(WATCHERS))
def test_watch_files_ticks_without_a_directory(tmp_path: Path, kind: str) -> None:
    """With nothing to watch yet, the ticks still come, and stop ends the generator."""
    stop = threading.Event()
    ticks = WATCHERS[kind]([tmp_path / "missing" / "a.log"], stop=stop, poll_interval_s=0.01)

    assert set() == next(ticks)
    stop.set()
    assert list(ticks) == []


def test_inotify_follows_rotation_and_a_directory_that_appears_later(tmp_path: Path) -> None:
    """Rename-and-create and delete are reported; a later directory is watched from a tick."""
    logs = tmp_path / "logs"
    path = logs / "a.log"
    stop = threading.Event()
    got: queue.Queue[set[Path]] = queue.Queue()
    watcher = threading.Thread(
        target=_collect, args=(watch_inotify([path], stop=stop, poll_interval_s=0.1), got)
    )
    watcher.start()
    try:
        logs.mkdir()
        _next_matching(got, lambda s: not s)
        _next_matching(got, lambda s: not s)  # a tick after the mkdir added the watch
        path.write_bytes(b"one\n")
        assert {path} == _next_matching(got, bool)
        path.rename(logs / "a.log.1")
        assert {path} == _next_matching(got, bool)
        path.write_bytes(b"two\n")
        assert {path} == _next_matching(got, bool)
        path.unlink()
        assert {path} == _next_matching(got, bool)
    finally:
        stop.set()
        watcher.join(timeout=10)
    assert not watcher.is_alive()
