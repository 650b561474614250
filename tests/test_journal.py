"""The journal: round trip, torn tails, corruption, rotation, snapshots, permissions,
and a failed write that leaves the journal as it was."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from healer.engine import Action, Decision, EngineState, Status
from healer.journal import (
    DecisionRecord,
    Journal,
    JournalCorrupt,
    NoteRecord,
    OutcomeRecord,
    Record,
    Snapshot,
    read_records,
)


def records(n: int, start: int = 0, pad: str = "") -> list[Record]:
    return [NoteRecord("test", f"{i}{pad}") for i in range(start, start + n)]


def numbers(found: list[Record]) -> list[str]:
    return [r.detail for r in found if isinstance(r, NoteRecord)]


def decision(key: str) -> DecisionRecord:
    return DecisionRecord(
        Decision(key, 1.0, 1.0, "fs0", "fs0#1", Action.RESPAWN, "respawn-on-exit", None)
    )


def test_append_and_recover_round_trip(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.recover()
    assert journal.append(records(3)) == 3
    assert journal.append(records(2, 3)) == 5
    journal.close()
    again = Journal(tmp_path / "j").recover()
    assert again.first_seq == 1
    assert again.last_seq == 5
    assert numbers(again.records) == ["0", "1", "2", "3", "4"]


def test_every_record_kind_round_trips(tmp_path: Path) -> None:
    written: list[Record] = [
        decision("fs0#1/respawn_virtiofsd/1"),
        OutcomeRecord("fs0#1/respawn_virtiofsd/1", Status.STARTED),
        OutcomeRecord("fs0#1/respawn_virtiofsd/1", Status.FAILED, "exit status 1"),
        NoteRecord("dropped", "pending pair x|fs0", "fs0"),
    ]
    journal = Journal(tmp_path / "j")
    journal.recover()
    journal.append(written)
    journal.close()
    assert list(read_records(tmp_path / "j")) == written


def test_files_are_private(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.recover()
    journal.append(records(1))
    journal.close()
    assert stat.S_IMODE((tmp_path / "j").stat().st_mode) == 0o700
    (segment,) = (tmp_path / "j").glob("segment-*")
    assert stat.S_IMODE(segment.stat().st_mode) == 0o600


def test_a_torn_last_record_is_cut_at_every_byte(tmp_path: Path) -> None:
    """Whatever byte a crash stops the last write at, recovery keeps the whole records."""
    base = tmp_path / "base"
    journal = Journal(base)
    journal.recover()
    journal.append(records(2))
    journal.append([decision("x#1/respawn_virtiofsd/1")])
    journal.close()
    (segment,) = base.glob("segment-*")
    data = segment.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    for cut in range(last_start, len(data)):
        case = tmp_path / f"cut{cut}"
        case.mkdir(mode=0o700)
        (case / segment.name).write_bytes(data[:cut])
        recovered = Journal(case).recover()
        assert numbers(recovered.records) == ["0", "1"]
        assert len(recovered.records) == 2
        assert recovered.torn_bytes == cut - last_start
        # the journal goes on from a clean line
        again = Journal(case)
        again.recover()
        again.append(records(1, 9))
        again.close()
        assert numbers(Journal(case).recover().records) == ["0", "1", "9"]


def test_garbage_in_the_middle_is_an_error_with_its_line(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.recover()
    journal.append(records(3))
    journal.close()
    (segment,) = (tmp_path / "j").glob("segment-*")
    lines = segment.read_bytes().split(b"\n")
    lines[1] = b"{not json"
    segment.write_bytes(b"\n".join(lines))
    with pytest.raises(JournalCorrupt) as caught:
        Journal(tmp_path / "j").recover()
    assert caught.value.line == 2
    assert "fix:" in str(caught.value)


def test_a_record_of_a_newer_healer_is_an_error_not_a_guess(tmp_path: Path) -> None:
    root = tmp_path / "j"
    root.mkdir(mode=0o700)
    line = {"v": 99, "seq": 1, "type": "note", "what": "x", "detail": "", "share": None}
    (root / "segment-000000000001.jsonl").write_bytes(orjson.dumps(line) + b"\n")
    with pytest.raises(JournalCorrupt, match="newer than this healer reads"):
        Journal(root).recover()


def test_segments_rotate_and_seqs_stay_continuous(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", segment_bytes=4096)
    journal.recover()
    for batch in range(40):
        journal.append(records(1, batch, pad="x" * 200))
    journal.close()
    segments = sorted((tmp_path / "j").glob("segment-*"))
    assert len(segments) > 1
    recovered = Journal(tmp_path / "j").recover()
    assert recovered.last_seq == 40
    assert [n.split("x")[0] for n in numbers(recovered.records)] == [str(i) for i in range(40)]


def test_snapshot_drops_old_segments_and_recovery_starts_from_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", segment_bytes=4096, keep_segments=1)
    journal.recover()
    for batch in range(40):
        journal.append(records(1, batch, pad="x" * 200))
    before = len(list((tmp_path / "j").glob("segment-*")))
    state = EngineState(clock=42.0, inputs=40)
    journal.snapshot(Snapshot(seq=journal.seq, state=state, rules="abc"))
    journal.append(records(1, 40))
    journal.close()
    after = len(list((tmp_path / "j").glob("segment-*")))
    assert after < before
    recovered = Journal(tmp_path / "j").recover()
    assert recovered.snapshot is not None
    assert recovered.snapshot.seq == 40
    assert recovered.snapshot.state == state
    assert recovered.snapshot.rules == "abc"
    assert recovered.first_seq == 41
    assert numbers(recovered.records) == ["40"]


def test_fsync_policy_decides_when_batches_are_durable(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", fsync="decisions")
    journal.recover()
    journal.append(records(1))
    assert journal.syncs == 0
    journal.append([*records(1), decision("k#1/notify/1")])
    assert journal.syncs == 1
    journal.close()
    never = Journal(tmp_path / "n", fsync="never")
    never.recover()
    never.append([decision("k#1/notify/1")])
    assert never.syncs == 0
    never.close()
    with pytest.raises(ValueError, match="fsync"):
        Journal(tmp_path / "x", fsync="sometimes")


def test_records_are_json_lines(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.recover()
    journal.append([OutcomeRecord("a", Status.STARTED)])
    journal.close()
    (segment,) = (tmp_path / "j").glob("segment-*")
    assert orjson.loads(segment.read_bytes()) == {
        "v": 1,
        "seq": 1,
        "type": "outcome",
        "key": "a",
        "status": "started",
        "detail": "",
    }


def test_a_failed_write_leaves_the_journal_as_it_was(tmp_path: Path) -> None:
    """A write that fails (here: the file turned read-only under the journal) gives
    its seqs back; the same records written later get the next seqs, and nothing
    half-written stays in the segment."""
    journal = Journal(tmp_path / "j")
    journal.recover()
    journal.append(records(2))
    (segment,) = (tmp_path / "j").glob("segment-*")
    assert journal._fd is not None
    os.close(journal._fd)  # the handle breaks as it does on a file system gone bad
    journal._fd = os.open(segment, os.O_RDONLY)
    with pytest.raises(OSError, match="Bad file descriptor"):
        journal.append(records(1, 2))
    assert journal.seq == 2
    assert journal.append(records(1, 2)) == 3
    journal.close()
    assert numbers(Journal(tmp_path / "j").recover().records) == ["0", "1", "2"]


def test_a_write_cut_short_by_the_disk_leaves_no_partial_record(tmp_path: Path) -> None:
    """A disk that takes half a batch (here: a file size limit, as a full disk does)
    leaves no half record behind: the retried batch follows the last whole one."""
    script = f"""
import resource, signal
from healer.journal import Journal, NoteRecord
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
journal = Journal({str(tmp_path / "j")!r}, fsync="never")
journal.recover()
journal.append([NoteRecord("test", "0")])
resource.setrlimit(resource.RLIMIT_FSIZE, (400, resource.RLIM_INFINITY))
big = [NoteRecord("test", str(n) + "x" * 150) for n in (1, 2, 3)]
try:
    journal.append(big)
except OSError as exc:
    print("failed", exc.errno)
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
journal.append(big)
journal.close()
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.split() == ["failed", str(errno.EFBIG)]
    found = numbers(Journal(tmp_path / "j").recover().records)
    assert [n.split("x")[0] for n in found] == ["0", "1", "2", "3"]
