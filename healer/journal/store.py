"""The journal: an append-only, segmented JSON-lines log that is the source of truth.

Every input event, tick, decision, transition, action outcome and source offset is a
typed record (:mod:`healer.journal.records`) written as one JSON line
``{"v": 1, "seq": n, "type": ..., ...}`` with a gap-free ``seq``. On start the
journal is read back (from the newest snapshot on), a torn last line left by a crash
is cut off, and the caller folds the records to rebuild its state.

A write that fails (a full disk, a file system turned read-only) leaves the journal
as it was before the write: the partial line is cut off again when possible, the
``seq`` numbers are given back, and the error goes to the caller, who may retry the
same records later.

Durability (``fsync``): ``"decisions"`` (default) makes a batch durable when it holds
a decision, an outcome or an offset, which the runner writes before it runs an
action, so no action ever runs without its decision on disk; ``"always"`` syncs every
batch; ``"never"`` leaves it to the OS (tests, replays). Files are created 0600 in a
0700 directory.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from healer.errors import HealerError
from healer.journal.records import (
    DURABLE,
    Record,
    RecordError,
    Snapshot,
    decode,
    decode_snapshot,
    encode,
    encode_snapshot,
)

__all__ = [
    "Journal",
    "JournalCorrupt",
    "JournalTail",
    "Recovered",
    "read_records",
    "read_segment",
]

FSYNC_POLICIES = ("decisions", "always", "never")
_SEGMENT = "segment-{:012d}.jsonl"
_SNAPSHOT = "snapshot-{:012d}.json"


class JournalCorrupt(HealerError):
    """A record other than the last cannot be read: the file was damaged."""

    def __init__(self, path: Path, line: int, problem: str) -> None:
        self.path, self.line = path, line
        super().__init__(
            f"{path}:{line}: {problem} (fix: restore the journal from a backup, or move "
            "the damaged segment away to start from the records before it)"
        )


@dataclass(slots=True)
class Recovered:
    """What reading the journal found."""

    snapshot: Snapshot | None = None
    records: list[Record] = field(default_factory=list)  # their seqs run from first_seq
    first_seq: int = 1
    last_seq: int = 0
    torn_bytes: int = 0


class Journal:
    """One journal directory; not thread-safe (the runner owns it)."""

    def __init__(
        self,
        directory: Path | str,
        *,
        fsync: str = "decisions",
        segment_bytes: int = 16 << 20,
        keep_segments: int = 4,
    ) -> None:
        if fsync not in FSYNC_POLICIES:
            msg = f"fsync must be one of {FSYNC_POLICIES}, not {fsync!r}"
            raise ValueError(msg)
        if segment_bytes < 4096 or keep_segments < 1:
            msg = "segment_bytes must be >= 4096 and keep_segments >= 1"
            raise ValueError(msg)
        self.directory = Path(directory)
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        self.keep_segments = keep_segments
        self.seq = 0
        self.syncs = 0
        self._fd: int | None = None  # the segment being appended to
        self._path: Path | None = None
        self._size = 0  # its size up to the last whole record
        self._torn = False  # a failed write may have left part of a record after _size

    # --- reading ----------------------------------------------------------------

    def recover(self) -> Recovered:
        """Read snapshot and records; cut a torn tail; leave the journal ready to append."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        result = Recovered()
        snapshot_seq = 0
        snapshots = sorted(self.directory.glob("snapshot-*.json"))
        if snapshots:
            try:
                result.snapshot = decode_snapshot(orjson.loads(snapshots[-1].read_bytes()))
            except (ValueError, RecordError) as exc:
                raise JournalCorrupt(snapshots[-1], 1, f"unreadable snapshot: {exc}") from exc
            snapshot_seq = result.snapshot.seq
            result.last_seq = snapshot_seq
        result.first_seq = snapshot_seq + 1
        segments = self._segments()
        for index, path in enumerate(segments):
            last = index == len(segments) - 1
            for seq, record in self._read_segment(path, last=last, result=result):
                if seq <= snapshot_seq:
                    continue
                if seq != result.last_seq + 1:
                    raise JournalCorrupt(path, 0, f"seq jumps from {result.last_seq} to {seq}")
                result.last_seq = seq
                result.records.append(record)
        self.seq = result.last_seq
        return result

    def _read_segment(
        self, path: Path, *, last: bool, result: Recovered
    ) -> Iterator[tuple[int, Record]]:
        records, good_end, size = read_segment(path, last=last)
        yield from records
        if good_end < size:
            result.torn_bytes = size - good_end
            with path.open("r+b") as file:  # cut it so appends start on a clean line
                file.truncate(good_end)
                os.fsync(file.fileno())

    def _segments(self) -> list[Path]:
        return sorted(self.directory.glob("segment-*.jsonl"))

    # --- writing ----------------------------------------------------------------

    def append(self, records: Sequence[Record]) -> int:
        """Write records with the next seqs; sync per the fsync policy; the last seq.

        On an OSError nothing of the batch counts: the seqs are given back and the
        segment is cut back to where it was (when the file system lets us).
        """
        if not records:
            return self.seq
        first = self.seq
        chunks = []
        for number, record in enumerate(records, first + 1):
            chunks.append(orjson.dumps({"seq": number, **encode(record)}) + b"\n")
        data = b"".join(chunks)
        durable = self.fsync == "always" or (
            self.fsync == "decisions" and any(type(r) in DURABLE for r in records)
        )
        try:
            if self._torn:
                self._cut()  # never append after part of a record
            if self._fd is None or self._size >= self.segment_bytes:
                self._rotate()
            assert self._fd is not None  # noqa: S101 - _rotate opened it
            view = memoryview(data)
            while view:  # unbuffered: what is not written is nowhere, not in a buffer
                view = view[os.write(self._fd, view) :]
            if durable:
                os.fsync(self._fd)
                self.syncs += 1
        except OSError:
            self._torn = True
            try:
                self._cut()
            except OSError:  # a read-only file system: cut on the next attempt
                self._close_fd()
            raise
        self._size += len(data)
        self.seq = first + len(records)
        return self.seq

    def _cut(self) -> None:
        """Cut the segment back to its last whole record (after a failed write)."""
        if self._fd is None and self._path is not None:
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        if self._fd is not None:
            os.ftruncate(self._fd, self._size)
        self._torn = False

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _rotate(self) -> None:
        resumed = self._fd is None  # no segment open yet: continue the newest one
        if self._fd is not None:
            os.fsync(self._fd)
            self._close_fd()
        segments = self._segments()
        if resumed and segments and segments[-1].stat().st_size < self.segment_bytes:
            path = segments[-1]  # continue the newest segment after a restart
        else:
            path = self.directory / _SEGMENT.format(self.seq + 1)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._path = path
        self._size = os.fstat(self._fd).st_size
        _sync_dir(self.directory)

    def snapshot(self, snapshot: Snapshot) -> Path:
        """Write a snapshot (atomic; its ``seq`` must be the current one), then drop
        old segments: those wholly before it, keeping ``keep_segments``.
        """
        if snapshot.seq != self.seq:
            msg = f"a snapshot at seq {snapshot.seq} while the journal is at {self.seq}"
            raise ValueError(msg)
        path = self.directory / _SNAPSHOT.format(self.seq)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(orjson.dumps(encode_snapshot(snapshot)))
            file.flush()
            os.fsync(file.fileno())
        tmp.replace(path)
        _sync_dir(self.directory)
        for old in sorted(self.directory.glob("snapshot-*.json"))[:-1]:
            old.unlink()
        segments = self._segments()
        for index, segment in enumerate(segments[: -self.keep_segments]):
            following = segments[index + 1]
            first_seq_of_next = int(following.stem.split("-")[1])
            if first_seq_of_next - 1 <= self.seq:
                segment.unlink()
        return path

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):  # a disk gone bad: the records are in memory
                os.fsync(self._fd)
            self._close_fd()


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_segment(path: Path, *, last: bool) -> tuple[list[tuple[int, Record]], int, int]:
    """The records of one segment with their seqs, read only: (records, end of the last
    good one, size).

    A torn record is allowed only at the end of the ``last`` segment; anything else
    that cannot be read raises :class:`JournalCorrupt` with its line.
    """
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # bytes after the last newline: empty unless torn
    good_end = len(data) - len(tail)
    records: list[tuple[int, Record]] = []
    for number, line in enumerate(lines, 1):
        try:
            parsed = _line_object(line)
        except ValueError as exc:
            if last and number == len(lines) and not tail:
                good_end -= len(line) + 1  # a torn write that happened to end in "\n"
                tail = line
                break
            raise JournalCorrupt(path, number, f"unreadable record: {exc}") from exc
        records.append(_decoded(path, number, parsed))
    if tail and not last:
        raise JournalCorrupt(path, len(lines) + 1, "a segment ends in a partial record")
    return records, good_end, len(data)


def _line_object(line: bytes) -> dict[str, Any]:
    """A journal line's JSON object; ValueError if the line is not one (a torn write)."""
    parsed = orjson.loads(line)
    if not isinstance(parsed, dict) or not isinstance(parsed.get("seq"), int):
        raise ValueError("not a journal record")
    return parsed


def _decoded(path: Path, number: int, parsed: dict[str, Any]) -> tuple[int, Record]:
    try:
        return parsed["seq"], decode(parsed)
    except RecordError as exc:
        raise JournalCorrupt(path, number, str(exc)) from exc


class JournalTail:
    """A journal directory read in order and then as it grows, changing nothing:
    ``read()`` returns the complete records appended since the last call.

    It follows the writer from segment to segment; a segment a snapshot removed is
    skipped (its records were folded into the snapshot). A line not yet complete is
    left for the next call, as is an unreadable last line of the newest segment (a
    torn write that a restart of healer cuts off); an unreadable line before others
    is :class:`JournalCorrupt`.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.segment: Path | None = None
        self.offset = 0  # bytes of ``segment`` read
        self.line = 0  # lines of ``segment`` read
        self.seq = 0  # the last seq returned

    def read(self) -> list[tuple[int, Record]]:
        out: list[tuple[int, Record]] = []
        while True:
            segments = sorted(self.directory.glob("segment-*.jsonl"))
            if self.segment not in segments:  # the first read, or removed by a snapshot
                later = [s for s in segments if self.segment is None or s.name > self.segment.name]
                if not later:
                    return out
                self.segment, self.offset, self.line = later[0], 0, 0
            assert self.segment is not None  # noqa: S101 - for the type checker
            newest = self.segment == segments[-1]
            self._read_segment(self.segment, newest, out)
            if newest:
                return out
            # The writer has moved on to a newer segment: this one is complete.
            following = next(s for s in segments if s.name > self.segment.name)
            self.segment, self.offset, self.line = following, 0, 0

    def _read_segment(self, segment: Path, newest: bool, out: list[tuple[int, Record]]) -> None:
        try:
            with segment.open("rb") as file:
                file.seek(self.offset)
                data = file.read()
        except FileNotFoundError:
            return  # removed by a snapshot meanwhile
        lines = data.split(b"\n")[:-1]  # the bytes after the last newline are not a record yet
        for index, line in enumerate(lines):
            number = self.line + 1
            try:
                parsed = _line_object(line)
            except ValueError as exc:
                if newest and index == len(lines) - 1:
                    return  # a torn write ending in a newline: wait for the cut or more
                raise JournalCorrupt(segment, number, f"unreadable record: {exc}") from exc
            seq, record = _decoded(segment, number, parsed)
            self.offset += len(line) + 1
            self.line = number
            if seq > self.seq:
                self.seq = seq
                out.append((seq, record))


def read_records(path: Path) -> Iterator[Record]:
    """Every record of a journal directory (or one segment file), changing nothing."""
    segments = sorted(path.glob("segment-*.jsonl")) if path.is_dir() else [path]
    for index, segment in enumerate(segments):
        for _seq, record in read_segment(segment, last=index == len(segments) - 1)[0]:
            yield record
