"""The pipeline as a library, and a journal replayed as what happened.

A small journal is written through the real runner with an executor whose outcomes
are chosen here (a respawn that succeeds, a remount that fails with a reason); then
``replay_journal`` and ``healer replay --journal`` must report exactly those: the
journal's own decisions and outcomes, its rule digest and true counts, never "would
run" for what ran. Re-deciding happens only when asked, and says so.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from healer.engine import Action, Decision, Engine, Status
from healer.events import Origin, VirtiofsdClientConnected, VirtiofsdExited
from healer.journal import Journal
from healer.pipeline import JournalCounts, render_report, replay_journal
from healer.rulefiles import load_rules
from healer.runner import Outcome, Runner

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 12, 1, tzinfo=UTC)


class Chosen:
    """An executor whose outcomes the test chose: remounts fail, the rest succeed."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def run(self, decision: Decision) -> Outcome | None:
        self.ran.append(decision.key)
        if decision.action == Action.REMOUNT:
            return Status.FAILED, "ssh: connect to host board: No route to host"
        return Status.SUCCEEDED


def exited(seconds: float, n: int) -> VirtiofsdExited:
    return VirtiofsdExited(
        time=T0 + timedelta(seconds=seconds),
        source="healer:fs0",
        offset=n,
        line=n,
        share="fs0",
        origin=Origin(program="virtiofsd", pid=100 + n, generation=n),
        signal="SIGKILL",
    )


def connected(seconds: float, n: int) -> VirtiofsdClientConnected:
    return VirtiofsdClientConnected(
        time=T0 + timedelta(seconds=seconds),
        source="virtiofsd:fs0",
        offset=n,
        line=n,
        share="fs0",
        origin=Origin(program="virtiofsd", pid=100 + n + 1, generation=n + 1),
    )


def write_journal(root: Path) -> tuple[Path, list[str], str]:
    """Two deaths, each healed by a respawn (succeeded) and a remount (failed)."""
    rules = load_rules(ROOT / "rules")
    journal = root / "journal"
    executor = Chosen()
    runner = Runner(Engine(rules), Journal(journal), executor, checker=None)
    runner.start()
    for n, at in ((1, 10.0), (2, 100.0)):
        runner.ingest([exited(at, n)])
        runner.ingest([connected(at + 0.01, n)])
        runner.tick((T0 + timedelta(seconds=at + 1)).timestamp())  # the session lasted
    assert runner.journal is not None
    runner.journal.close()
    return journal, executor.ran, rules.digest


def test_a_journal_replays_as_recorded(tmp_path: Path) -> None:
    journal, ran, digest = write_journal(tmp_path)
    assert sorted(ran) == [
        "fs0#1/remount_guest/1",
        "fs0#1/respawn_virtiofsd/1",
        "fs0#2/remount_guest/1",
        "fs0#2/respawn_virtiofsd/1",
    ]
    result = replay_journal(journal, report=True)
    assert result.recorded
    assert result.recorded_rules == (digest,)
    counts = result.counts
    assert isinstance(counts, JournalCounts)
    assert counts.events == 4
    assert counts.decisions == 4
    assert counts.outcomes == {"started": 4, "succeeded": 2, "failed": 2}
    assert counts.redecided is None
    text = render_report(result)
    assert "| would run |" not in text  # no action cell says so: they ran
    assert "| succeeded |" in text
    assert "No route to host" in text  # the recorded reason of the failed remount
    assert digest in text


def test_the_command_line_prints_the_journal_as_recorded(tmp_path: Path) -> None:
    journal, _, digest = write_journal(tmp_path)
    counts = subprocess.run(
        [sys.executable, "-m", "healer", "replay", "--journal", str(journal), "--format", "counts"],
        capture_output=True,
        check=True,
    )
    document = orjson.loads(counts.stdout)
    assert document["events"] == 4
    assert document["outcomes"] == {"started": 4, "succeeded": 2, "failed": 2}
    assert document["rules"] == [digest]
    lines = subprocess.run(
        [sys.executable, "-m", "healer", "replay", "--journal", str(journal), "--format", "jsonl"],
        capture_output=True,
        check=True,
    ).stdout.splitlines()
    items = [orjson.loads(line) for line in lines]
    outcomes = [i for i in items if i.get("type") == "outcome"]
    assert {(o["key"], o["status"]) for o in outcomes if o["status"] != "started"} == {
        ("fs0#1/respawn_virtiofsd/1", "succeeded"),
        ("fs0#1/remount_guest/1", "failed"),
        ("fs0#2/respawn_virtiofsd/1", "succeeded"),
        ("fs0#2/remount_guest/1", "failed"),
    }
    assert not [i for i in items if i.get("would_run")]


def test_re_deciding_happens_only_when_asked_and_says_so(tmp_path: Path) -> None:
    journal, _, digest = write_journal(tmp_path)
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "healer",
            "replay",
            "--journal",
            str(journal),
            "--rules",
            str(ROOT / "rules"),
            "--format",
            "counts",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"the journal was written under {digest}" in again.stderr
    document = orjson.loads(again.stdout)
    assert document["redecided"]["rules"] == digest
    assert document["redecided"]["decisions"] == 4


def test_bad_output_paths_and_flag_mixes_get_a_message_not_a_traceback() -> None:
    def healer(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "healer", "replay", *args],
            capture_output=True,
            text=True,
            check=False,
        )

    report = healer("--report", "/nonexistent/dir/x.md")
    assert report.returncode == 3
    assert "/nonexistent/dir/x.md: its directory does not exist" in report.stderr
    assert report.stdout == ""  # nothing printed before the error was known
    written = healer("--write-journal", "/proc/foo")
    assert written.returncode == 3
    assert "/proc/foo" in written.stderr
    whatif = healer("--what-if", str(ROOT / "rules"))
    assert whatif.returncode == 2
    assert "--what-if needs --report" in whatif.stderr
    for result in (report, written, whatif):
        assert "Traceback" not in result.stderr
