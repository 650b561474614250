"""The journal: round trip, torn tails, corruption, rotation, snapshots, permissions,
and a failed write that leaves the journal as it was."""

from __future__ import annotations

import errno
import os
import random
import re
import stat
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from healer.engine import Action, Decision, EngineState, Status
from healer.engine.model import Cause, Phase, Transition
from healer.events import Origin, VirtiofsdExited
from healer.journal import (
    DecisionRecord,
    EventRecord,
    Journal,
    JournalCorrupt,
    NoteRecord,
    OperatorRecord,
    OutcomeRecord,
    PositionRecord,
    Record,
    Snapshot,
    StartRecord,
    TickRecord,
    TransitionRecord,
    read_records,
)
from healer.journal.lock import JournalLock
from healer.parse import Checkpoint
from healer.pipeline.recorded import AsRecorded, JournalTally
from healer.sources.tailtypes import FileIdentity, TailPosition


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


def a_small_real_journal(root: Path) -> Path:
    """Three rounds of what a live healer writes (an event, its phase change, the
    decision, its outcomes, the source position), behind a start; its one segment."""
    journal = Journal(root, fsync="never")
    journal.recover()
    journal.append([StartRecord("digest", "1.0", 7, "config")])
    for round_ in range(3):
        offset, when = 100 * round_, 10.0 * round_
        cause = Cause("VirtiofsdExited", "vfs.log", round_ + 1, offset, when, 42, round_)
        event = VirtiofsdExited(
            time=datetime(2026, 1, 2, 3, 4, round_, tzinfo=UTC),
            source="vfs.log",
            offset=offset,
            line=round_ + 1,
            share="fs0",
            origin=Origin(program="virtiofsd", pid=42, uptime=1.5),
            message="exited",
            status=1,
            expected=False,
        )
        key = f"fs0#{round_}/respawn_virtiofsd/1"
        checkpoint = Checkpoint(offset + 90, round_ + 2, {"vm": "2026-01-02T03:00:00Z"}, None)
        journal.append(
            [
                EventRecord(event, "vfs.log"),
                TransitionRecord(
                    Transition(
                        when, "fs0", f"fs0#{round_}", Phase.HEALTHY, Phase.FAILING, "x", cause
                    )
                ),
                DecisionRecord(
                    Decision(key, when, when, "fs0", f"fs0#{round_}", Action.RESPAWN, "r", cause)
                ),
                OutcomeRecord(key, Status.STARTED),
                OutcomeRecord(key, Status.SUCCEEDED, "ok"),
                PositionRecord("vfs.log", checkpoint, TailPosition(FileIdentity(1, 2, "fp"), 9)),
                TickRecord(when + 1),
            ]
        )
    journal.append([NoteRecord("dropped", "why", "fs0"), OperatorRecord("hold", "fs0", 0, 9)])
    journal.close()
    (segment,) = root.glob("segment-*")
    return segment


_OTHER_TYPES: list[object] = [None, True, 7, -1.5, "s", [], [1, "x"], {}, {"a": [{}]}]


def _retyped(line: bytes, rng: random.Random) -> bytes:
    """The line with one value anywhere in it (nested too) replaced by another type's."""
    record = orjson.loads(line)
    places: list[tuple[dict[str, object] | list[object], str | int]] = []
    nodes: list[object] = [record]
    while nodes:
        node = nodes.pop()
        items = (
            node.items()
            if isinstance(node, dict)
            else enumerate(node)
            if isinstance(node, list)
            else ()
        )
        for where, value in items:
            assert isinstance(node, dict | list)
            places.append((node, where))
            nodes.append(value)
    parent, where = rng.choice(places)
    old = parent[where]  # type: ignore[index]
    parent[where] = rng.choice([v for v in _OTHER_TYPES if type(v) is not type(old)])  # type: ignore[index]
    return orjson.dumps(record)


def mutated(data: bytes, rng: random.Random) -> bytes:
    """``data`` damaged once, the way disks, editors and bad copies damage files."""
    at = rng.randrange(len(data))
    lines = data.split(b"\n")[:-1]
    line = rng.randrange(len(lines))
    match rng.choice(["flip", "delete", "duplicate", "truncate", "insert", "retype"]):
        case "flip":
            return data[:at] + bytes([data[at] ^ 1 << rng.randrange(8)]) + data[at + 1 :]
        case "delete":
            return data[:at] + data[at + rng.randint(1, 40) :]
        case "duplicate":
            lines.insert(rng.randrange(len(lines) + 1), lines[line])
        case "truncate":
            return data[:at]
        case "insert":
            return data[:at] + rng.randbytes(rng.randint(1, 16)) + data[at:]
        case _:
            lines[line] = _retyped(lines[line], rng)
    return b"\n".join(lines) + b"\n"


def test_a_damaged_journal_is_reported_never_raised(tmp_path: Path) -> None:
    """1,000 seeded damages of a real segment: each reads back (and replays as
    recorded) or is a JournalCorrupt naming the segment and line, never a traceback.
    Before, a list where the tail position's object was raised AttributeError, and a
    value of the wrong type read back as a record that broke the replay later."""
    segment = a_small_real_journal(tmp_path / "base")
    data = segment.read_bytes()
    rng = random.Random(13)  # noqa: S311 - test randomness, not crypto
    escaped: list[str] = []
    for case in range(1000):
        root = tmp_path / f"case{case}"
        root.mkdir(mode=0o700)
        (root / segment.name).write_bytes(damaged := mutated(data, rng))
        try:
            tally, as_recorded = JournalTally(), AsRecorded()
            for record in read_records(root):  # what healer replay --journal does
                tally.count(record)
                as_recorded.item(record)
        except JournalCorrupt as exc:
            if not re.search(rf"{segment.name}:\d+: ", str(exc)):
                escaped.append(f"case {case}: not located: {exc}")
        except Exception as exc:  # every other error is the finding
            escaped.append(f"case {case}: {exc!r} from {damaged[:200]!r}")
    assert not escaped, f"{len(escaped)} raised past JournalCorrupt:\n" + "\n".join(escaped[:5])


def test_a_journal_directory_others_can_enter_is_made_private_or_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o755)
    mine.chmod(0o755)  # whatever the umask
    JournalLock.acquire(mine).release()
    assert stat.S_IMODE(mine.stat().st_mode) == 0o700
    assert "was mode 755: made 0700" in caplog.text
    caplog.clear()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    theirs.chmod(0o777)
    os.chown(theirs, 65534, 65534)  # nobody's: healer did not make it
    JournalLock.acquire(theirs).release()
    assert stat.S_IMODE(theirs.stat().st_mode) == 0o777  # not healer's to change
    assert "belongs to uid 65534" in caplog.text
