"""The journal: an append-only, segmented JSON-lines log that is the source of truth.

Every input event, tick, decision, transition, action outcome and source offset is a
record ``{"v": 1, "seq": n, "type": ..., ...}`` with a gap-free ``seq``. On start the
journal is read back (from the newest snapshot on), a torn last line left by a crash
is cut off, and the caller folds the records to rebuild its state.

Durability (``fsync``): ``"decisions"`` (default) makes a batch durable when it holds
a decision, an outcome or an offset, which the runner writes before it runs an
action, so no action ever runs without its decision on disk; ``"always"`` syncs every
batch; ``"never"`` leaves it to the OS (tests, replays). Files are created 0600 in a
0700 directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from healer.errors import HealerError

__all__ = ["SCHEMA", "Journal", "JournalCorrupt", "Recovered", "read_records", "read_segment"]

SCHEMA = 1
FSYNC_POLICIES = ("decisions", "always", "never")
_DURABLE_TYPES = frozenset({"decision", "outcome", "offset", "start"})
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

    snapshot: dict[str, Any] | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
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
        self._file: Any = None
        self._size = 0

    # --- reading ----------------------------------------------------------------

    def recover(self) -> Recovered:
        """Read snapshot and records; cut a torn tail; leave the journal ready to append."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        result = Recovered()
        snapshot_seq = 0
        snapshots = sorted(self.directory.glob("snapshot-*.json"))
        if snapshots:
            result.snapshot = orjson.loads(snapshots[-1].read_bytes())
            snapshot_seq = int(result.snapshot["seq"])
            result.last_seq = snapshot_seq
        segments = self._segments()
        for index, path in enumerate(segments):
            last = index == len(segments) - 1
            for record in self._read_segment(path, last=last, result=result):
                seq = record["seq"]
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
    ) -> Iterator[dict[str, Any]]:
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

    def append(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Write records with the next seqs; sync per the fsync policy. Returns them."""
        if not records:
            return []
        if self._file is None or self._size >= self.segment_bytes:
            self._rotate()
        stamped = []
        chunks = []
        for record in records:
            self.seq += 1
            full = {"v": SCHEMA, "seq": self.seq, **record}
            stamped.append(full)
            chunks.append(orjson.dumps(full) + b"\n")
        data = b"".join(chunks)
        self._file.write(data)
        self._file.flush()
        self._size += len(data)
        if self.fsync == "always" or (
            self.fsync == "decisions" and any(r["type"] in _DURABLE_TYPES for r in records)
        ):
            os.fsync(self._file.fileno())
            self.syncs += 1
        return stamped

    def _rotate(self) -> None:
        if self._file is not None:
            os.fsync(self._file.fileno())
            self._file.close()
        segments = self._segments()
        if segments and self._file is None and segments[-1].stat().st_size < self.segment_bytes:
            path = segments[-1]  # continue the newest segment after a restart
        else:
            path = self.directory / _SEGMENT.format(self.seq + 1)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._file = os.fdopen(fd, "ab")
        self._size = path.stat().st_size
        _sync_dir(self.directory)

    def snapshot(self, state: dict[str, Any]) -> Path:
        """Write a snapshot at the current seq (atomic), then drop old segments.

        Segments wholly before the snapshot are deleted, keeping ``keep_segments``.
        """
        path = self.directory / _SNAPSHOT.format(self.seq)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(orjson.dumps({"v": SCHEMA, "seq": self.seq, **state}))
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
        if self._file is not None:
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None


def _sync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_segment(path: Path, *, last: bool) -> tuple[list[dict[str, Any]], int, int]:
    """The records of one segment, read only: (records, end of the last good one, size).

    A torn record is allowed only at the end of the ``last`` segment; anything else
    that cannot be read raises :class:`JournalCorrupt` with its line.
    """
    data = path.read_bytes()
    lines = data.split(b"\n")
    tail = lines.pop()  # bytes after the last newline: empty unless torn
    good_end = len(data) - len(tail)
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        try:
            record = orjson.loads(line)
            if not isinstance(record, dict) or "seq" not in record:
                raise ValueError("not a journal record")
        except ValueError as exc:
            if last and number == len(lines) and not tail:
                good_end -= len(line) + 1  # a torn write that happened to end in "\n"
                tail = line
                break
            raise JournalCorrupt(path, number, f"unreadable record: {exc}") from exc
        if record.get("v") != SCHEMA:
            raise JournalCorrupt(path, number, f"schema {record.get('v')} is not {SCHEMA}")
        records.append(record)
    if tail and not last:
        raise JournalCorrupt(path, len(lines) + 1, "a segment ends in a partial record")
    return records, good_end, len(data)


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """Every record of a journal directory (or one segment file), changing nothing."""
    segments = sorted(path.glob("segment-*.jsonl")) if path.is_dir() else [path]
    for index, segment in enumerate(segments):
        yield from read_segment(segment, last=index == len(segments) - 1)[0]
