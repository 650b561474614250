"""`healer journal`: a journal read as an operator reads journalctl, running healer or
not. The journal is written here record by record; the rows expected are written by
hand from what each record says."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from healer.cli_journal import parse_since, run_journal
from healer.engine.model import Action, Cause, Decision, Phase, Status, Transition
from healer.events import VirtiofsdExited
from healer.journal import (
    DecisionRecord,
    EventRecord,
    Journal,
    NoteRecord,
    OperatorRecord,
    OutcomeRecord,
    PositionRecord,
    Record,
    StartRecord,
    TickRecord,
    TransitionRecord,
)
from healer.journal.store import JournalTail
from healer.parse import Checkpoint

T = datetime(2026, 12, 4, 10, 0, 0, tzinfo=UTC).timestamp()  # 2026-12-04T10:00:00Z
KEY = "fs0#1/respawn_virtiofsd/1"
CAUSE = Cause("VirtiofsdExited", "healer:fs0", 1, 0, T)


def incident() -> list[Record]:
    """healer starts; fs0's daemon is killed at T and respawned; fs1 is paused at
    T+60; healer notes something about fs1; bookkeeping records between."""
    exited = VirtiofsdExited(
        time=datetime.fromtimestamp(T, UTC),
        source="healer:fs0",
        offset=0,
        line=1,
        share="fs0",
        level="WARN",
        signal="SIGKILL",
        reporter="healer",
    )
    decision = Decision(KEY, T, T, "fs0", "fs0#1", Action.RESPAWN, "respawn-on-exit", CAUSE)
    return [
        StartRecord("feedc0de", healer="0.1.0", pid=4242, config="abc123"),
        EventRecord(exited, stream="healer:fs0"),
        TransitionRecord(Transition(T, "fs0", "fs0#1", Phase.HEALTHY, Phase.FAILING, "r", CAUSE)),
        DecisionRecord(decision),
        PositionRecord("healer:fs0", Checkpoint(10, 1, {}, None, (), {})),
        OutcomeRecord(KEY, Status.STARTED),
        OutcomeRecord(KEY, Status.SUCCEEDED, "pid 4343"),
        TickRecord(T + 30),
        OperatorRecord("pause", share="fs1", uid=1000, pid=777, time=T + 60),
        NoteRecord("superseded", "closed at start-up", share="fs1"),
    ]


def write(directory: Path, records: list[Record]) -> None:
    journal = Journal(directory, fsync="never")
    journal.recover()
    journal.append(records)
    journal.close()


def run(directory: Path, *flags: str) -> list[str]:
    parser = argparse.ArgumentParser()
    parser.add_argument("--journal")
    parser.add_argument("--config")
    parser.add_argument("--share")
    parser.add_argument("--since")
    parser.add_argument("--follow", action="store_true")
    parser.add_argument("--lines", type=int)
    parser.add_argument("--format", default="table")
    args = parser.parse_args(["--journal", str(directory), *flags])
    out = io.BytesIO()
    now = datetime.fromtimestamp(T + 120, UTC)
    assert run_journal(args, out=out, now=lambda: now) == 0
    return out.getvalue().decode().splitlines()


def columns(line: str) -> tuple[str, str, str]:
    """TIME, KIND and DETAILS of a table row (the widths of healer replay's table)."""
    return line[:27].strip(), line[65:94].strip(), line[94:].strip()


def test_every_row_a_person_needs_and_no_bookkeeping(tmp_path: Path) -> None:
    write(tmp_path / "j", incident())
    lines = run(tmp_path / "j")
    assert lines[0].startswith("TIME")
    assert [columns(line) for line in lines[1:]] == [
        ("", "** healer started", "pid=4242 version=0.1.0 rules=feedc0de config=abc123"),
        (
            "2026-12-04T10:00:00Z",
            "VirtiofsdExited",
            "share=fs0 signal=SIGKILL reporter=healer",
        ),
        ("2026-12-04T10:00:00Z", "== failing", "share=fs0 fs0#1: healthy -> failing (r)"),
        (
            "2026-12-04T10:00:00Z",
            "-> respawn_virtiofsd",
            f"decided share=fs0 rule=respawn-on-exit key={KEY}",
        ),
        ("", "<- respawn_virtiofsd", f"started share=fs0 key={KEY}"),
        ("", "<- respawn_virtiofsd", f"succeeded: pid 4343 share=fs0 key={KEY}"),
        ("2026-12-04T10:01:00Z", "!! pause", "share=fs1 pid=777"),
        ("", ".. superseded", "share=fs1 closed at start-up"),
    ]
    assert "operator:uid=1000" in lines[7]


def test_share_filter_keeps_the_share_and_healers_starts(tmp_path: Path) -> None:
    write(tmp_path / "j", incident())
    kinds = [columns(line)[1] for line in run(tmp_path / "j", "--share", "fs1")[1:]]
    assert kinds == ["** healer started", "!! pause", ".. superseded"]
    fs0 = [columns(line)[1] for line in run(tmp_path / "j", "--share", "fs0")[1:]]
    assert fs0 == [
        "** healer started",
        "VirtiofsdExited",
        "== failing",
        "-> respawn_virtiofsd",
        "<- respawn_virtiofsd",
        "<- respawn_virtiofsd",
    ]


def test_since_places_a_timeless_row_at_the_time_before_it(tmp_path: Path) -> None:
    write(tmp_path / "j", incident())
    # From T+1: the pause (T+60) and the note after it (timeless: placed at T+60).
    later = [columns(line)[1] for line in run(tmp_path / "j", "--since=-119s")[1:]]
    assert later == ["!! pause", ".. superseded"]
    # From T: everything but the start (timeless and first: no time to place it at).
    from_t = run(tmp_path / "j", "--since", "2026-12-04T10:00:00Z")
    assert [columns(line)[1] for line in from_t[1:]] == [
        "VirtiofsdExited",
        "== failing",
        "-> respawn_virtiofsd",
        "<- respawn_virtiofsd",
        "<- respawn_virtiofsd",
        "!! pause",
        ".. superseded",
    ]


def test_jsonl_rows_carry_their_seq_and_type(tmp_path: Path) -> None:
    write(tmp_path / "j", incident())
    rows = [orjson.loads(line) for line in run(tmp_path / "j", "--format", "jsonl")]
    assert [(r["type"], r["seq"]) for r in rows] == [
        ("start", 1),
        ("event", 2),
        ("transition", 3),
        ("decision", 4),
        ("outcome", 6),
        ("outcome", 7),
        ("operator", 9),
        ("note", 10),
    ]
    assert rows[6] == {
        "type": "operator",
        "seq": 9,
        "command": "pause",
        "share": "fs1",
        "uid": 1000,
        "pid": 777,
        "detail": "",
        "time": "2026-12-04T10:01:00Z",
    }
    assert (rows[5]["status"], rows[5]["detail"], rows[5]["action"]) == (
        "succeeded",
        "pid 4343",
        "respawn_virtiofsd",
    )


def test_lines_keeps_the_last_rows(tmp_path: Path) -> None:
    write(tmp_path / "j", incident())
    kinds = [columns(line)[1] for line in run(tmp_path / "j", "--lines", "2")[1:]]
    assert kinds == ["!! pause", ".. superseded"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-04T09:30:00Z", datetime(2026, 12, 4, 9, 30, tzinfo=UTC)),
        ("2026-12-04T11:30:00+02:00", datetime(2026, 12, 4, 9, 30, tzinfo=UTC)),
        ("2026-12-04 09:30", datetime(2026, 12, 4, 9, 30, tzinfo=UTC)),
        ("2026-12-04", datetime(2026, 12, 4, tzinfo=UTC)),
        ("today", datetime(2026, 12, 4, tzinfo=UTC)),
        ("yesterday", datetime(2026, 12, 3, tzinfo=UTC)),
        ("-10min", datetime(2026, 12, 4, 11, 50, tzinfo=UTC)),
        ("2h ago", datetime(2026, 12, 4, 10, 0, tzinfo=UTC)),
        ("90s", datetime(2026, 12, 4, 11, 58, 30, tzinfo=UTC)),
    ],
)
def test_since_reads_the_forms_journalctl_users_type(text: str, expected: datetime) -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    assert parse_since(text, now) == expected


def test_a_bad_since_or_a_missing_journal_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    write(tmp_path / "j", incident())
    for flags, message in (
        (["--journal", str(tmp_path / "j"), "--since", "teatime"], "--since 'teatime' is not"),
        (["--journal", str(tmp_path / "none")], "no such journal"),
    ):
        result = subprocess.run(
            [sys.executable, "-m", "healer", "journal", *flags],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 3, result.stderr
        assert message in result.stderr
        assert "Traceback" not in result.stderr


def test_the_tail_follows_appends_across_segments_and_a_snapshot(tmp_path: Path) -> None:
    """What --follow reads: new complete records only, on into the next segment; a
    line still being written waits; a segment a snapshot removed is skipped."""
    directory = tmp_path / "j"
    journal = Journal(directory, fsync="never", segment_bytes=4096)
    journal.recover()
    tail = JournalTail(directory)
    assert tail.read() == []
    journal.append([NoteRecord("n", str(i)) for i in range(3)])
    assert [r.detail for _, r in tail.read() if isinstance(r, NoteRecord)] == ["0", "1", "2"]
    assert tail.read() == []
    for i in range(3, 12):  # a segment is rotated between batches: 2 or more
        journal.append([NoteRecord("n", str(i % 10) * 600)])
    assert len(sorted(directory.glob("segment-*.jsonl"))) > 1
    seqs = [seq for seq, _ in tail.read()]
    assert seqs == list(range(4, 13))
    newest = sorted(directory.glob("segment-*.jsonl"))[-1]
    with newest.open("ab") as file:
        file.write(b'{"v":1,"seq":13,"type":"note","what":"half')  # a write under way
    assert tail.read() == []
    with newest.open("ab") as file:
        file.write(b'","detail":""}\n')
    assert [seq for seq, _ in tail.read()] == [13]
    journal.close()
    # A reader that starts after a snapshot removed the first segment: from the next.
    first = sorted(directory.glob("segment-*.jsonl"))[0]
    first.unlink()
    fresh = [seq for seq, _ in JournalTail(directory).read()]
    assert fresh[0] > 1
    assert fresh[-1] == 13
