"""The journal: round trip, torn tails, corruption, rotation, snapshots, permissions."""

from __future__ import annotations

import stat
from pathlib import Path

import orjson
import pytest

from healer.journal import Journal, JournalCorrupt


def records(n: int, start: int = 0) -> list[dict[str, object]]:
    return [{"type": "event", "n": i} for i in range(start, start + n)]


def test_append_and_recover_round_trip(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.recover()
    journal.append(records(3))
    journal.append(records(2, 3))
    journal.close()
    again = Journal(tmp_path / "j").recover()
    assert [r["seq"] for r in again.records] == [1, 2, 3, 4, 5]
    assert [r["n"] for r in again.records] == [0, 1, 2, 3, 4]
    assert all(r["v"] == 1 for r in again.records)


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
    journal.append([{"type": "decision", "key": "x/respawn/1", "pad": "z" * 40}])
    journal.close()
    (segment,) = base.glob("segment-*")
    data = segment.read_bytes()
    last_start = data.rstrip(b"\n").rfind(b"\n") + 1
    for cut in range(last_start, len(data)):
        case = tmp_path / f"cut{cut}"
        case.mkdir(mode=0o700)
        (case / segment.name).write_bytes(data[:cut])
        recovered = Journal(case).recover()
        assert [r["seq"] for r in recovered.records] == [1, 2]
        assert recovered.torn_bytes == cut - last_start
        # the journal goes on from a clean line
        again = Journal(case)
        again.recover()
        again.append(records(1, 9))
        again.close()
        assert [r["seq"] for r in Journal(case).recover().records] == [1, 2, 3]


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


def test_segments_rotate_and_seqs_stay_continuous(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", segment_bytes=4096)
    journal.recover()
    for batch in range(40):
        journal.append([{"type": "event", "pad": "x" * 200, "b": batch}])
    journal.close()
    segments = sorted((tmp_path / "j").glob("segment-*"))
    assert len(segments) > 1
    recovered = Journal(tmp_path / "j").recover()
    assert [r["seq"] for r in recovered.records] == list(range(1, 41))


def test_snapshot_drops_old_segments_and_recovery_starts_from_it(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", segment_bytes=4096, keep_segments=1)
    journal.recover()
    for batch in range(40):
        journal.append([{"type": "event", "pad": "x" * 200, "b": batch}])
    before = len(list((tmp_path / "j").glob("segment-*")))
    journal.snapshot({"state": {"answer": 42}})
    journal.append([{"type": "event", "b": 40}])
    journal.close()
    after = len(list((tmp_path / "j").glob("segment-*")))
    assert after < before
    recovered = Journal(tmp_path / "j").recover()
    assert recovered.snapshot is not None
    assert recovered.snapshot["seq"] == 40
    assert recovered.snapshot["state"] == {"answer": 42}
    assert [r["seq"] for r in recovered.records] == [41]


def test_fsync_policy_decides_when_batches_are_durable(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", fsync="decisions")
    journal.recover()
    journal.append([{"type": "event"}])
    assert journal.syncs == 0
    journal.append([{"type": "event"}, {"type": "decision", "key": "k"}])
    assert journal.syncs == 1
    journal.close()
    never = Journal(tmp_path / "n", fsync="never")
    never.recover()
    never.append([{"type": "decision", "key": "k"}])
    assert never.syncs == 0
    never.close()
    with pytest.raises(ValueError, match="fsync"):
        Journal(tmp_path / "x", fsync="sometimes")


def test_records_are_json_lines(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.recover()
    journal.append([{"type": "outcome", "key": "a", "status": "started"}])
    journal.close()
    (segment,) = (tmp_path / "j").glob("segment-*")
    assert orjson.loads(segment.read_bytes()) == {
        "v": 1,
        "seq": 1,
        "type": "outcome",
        "key": "a",
        "status": "started",
    }
