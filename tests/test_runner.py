"""The runner: folding the journal rebuilds the live state; replays of journals match."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
from healing_loop import ROOT, World, drive, make_log

from healer.engine import Command, Decision, Engine, EngineState, Output, Status, Tick
from healer.events import BackendConnectTimeout, Event, VirtiofsdExited
from healer.journal import Journal
from healer.rulefiles import load_rules
from healer.runner import Runner


def test_folding_the_journal_gives_the_live_state(tmp_path: Path) -> None:
    log = tmp_path / "virtiofsd.log"
    make_log(log)
    live = drive(log, tmp_path / "j", World(tmp_path / "w"))
    folded = Runner(Engine(load_rules(ROOT / "rules")), Journal(tmp_path / "j"))
    assert folded.start() == []  # nothing open, nothing to run
    assert folded.state == live.state
    assert folded.checkpoints == live.checkpoints
    assert folded.journal is not None
    folded.journal.close()


def test_a_snapshot_start_equals_a_full_fold(tmp_path: Path) -> None:
    log = tmp_path / "virtiofsd.log"
    make_log(log)
    live = drive(log, tmp_path / "j", World(tmp_path / "w"))
    journal = Journal(tmp_path / "j")
    runner = Runner(Engine(load_rules(ROOT / "rules")), journal, snapshot_every=1)
    runner.start()
    runner.snapshot()  # the state as folded, written as a snapshot
    journal.close()
    assert list((tmp_path / "j").glob("snapshot-*.json"))
    again = Runner(Engine(load_rules(ROOT / "rules")), Journal(tmp_path / "j"))
    again.start()
    assert again.state == live.state
    assert again.journal is not None
    again.journal.close()


def test_other_rules_do_not_back_fill_decisions(tmp_path: Path) -> None:
    """A journal written under other rules is folded, but its events decide nothing anew."""
    log = tmp_path / "virtiofsd.log"
    make_log(log)
    drive(log, tmp_path / "j", World(tmp_path / "w"))
    other = tmp_path / "rules"
    other.mkdir()
    text = (ROOT / "rules" / "healing.toml").read_text().replace("dedupe = 5.0", "dedupe = 1.0")
    (other / "healing.toml").write_text(text)
    runner = Runner(Engine(load_rules(other)), Journal(tmp_path / "j"), World(tmp_path / "w"))
    assert runner.start() == []
    assert runner.journal is not None
    runner.journal.close()
    (segment,) = (tmp_path / "j").glob("segment-*")
    last = orjson.loads(segment.read_bytes().splitlines()[-1])
    assert last["type"] == "start"
    assert last["rules"] == load_rules(other).digest


def test_replaying_a_journal_decides_like_replaying_the_logs(tmp_path: Path) -> None:
    log = tmp_path / "virtiofsd.log"
    make_log(log)
    healer = [sys.executable, "-m", "healer", "replay", "--format", "jsonl"]
    from_logs = subprocess.run(
        [*healer, "--write-journal", str(tmp_path / "j"), str(log)],
        capture_output=True,
        check=True,
    ).stdout
    from_journal = subprocess.run(
        [*healer, "--journal", str(tmp_path / "j")], capture_output=True, check=True
    ).stdout

    def decisions(out: bytes) -> list[tuple[str, str]]:
        items = [orjson.loads(line) for line in out.splitlines()]
        return [(d["key"], d["action"]) for d in items if d.get("type") == "decision"]

    assert decisions(from_logs)
    assert decisions(from_journal) == decisions(from_logs)


class Deferring:
    """An executor that hands re-adds to 'a worker' (completes them later) and runs the rest."""

    def __init__(self) -> None:
        self.ran: list[tuple[str, str]] = []
        self.pending: list[str] = []

    def run(self, decision: Decision) -> Status | None:
        self.ran.append((decision.share, decision.action))
        if decision.action == "readd_fs":
            self.pending.append(decision.key)
            return None
        return Status.SUCCEEDED


def test_an_action_that_runs_on_holds_its_successors_but_not_other_shares(
    tmp_path: Path,
) -> None:
    clock = [1000.0]
    executor = Deferring()
    runner = Runner(
        Engine(load_rules(ROOT / "rules")),
        Journal(tmp_path / "j"),
        executor,
        now=lambda: clock[0],
    )
    runner.start()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    runner.ingest(
        [BackendConnectTimeout(time=at, source="ch", offset=0, line=1, share="fs0", socket="/s")]
    )
    runner.run_due()
    assert executor.ran == [("fs0", "ensure_virtiofsd"), ("fs0", "readd_fs")]
    # Another share is healed while fs0's re-add is still out.
    runner.ingest([VirtiofsdExited(time=at, source="sup", offset=0, line=1, share="fs1")])
    runner.run_due()
    assert executor.ran[2:] == [("fs1", "respawn_virtiofsd"), ("fs1", "remount_guest")]
    assert ("fs0", "remount_guest") not in executor.ran
    (key,) = executor.pending
    assert runner.complete(key, Status.SUCCEEDED)
    assert not runner.complete(key, Status.SUCCEEDED)  # an outcome is taken once
    runner.run_due()
    assert executor.ran[-1] == ("fs0", "remount_guest")
    assert runner.open == {}
    assert runner.journal is not None
    runner.journal.close()
    outcomes = [
        r["status"]
        for segment in sorted((tmp_path / "j").glob("segment-*"))
        for r in map(orjson.loads, segment.read_bytes().splitlines())
        if r["type"] == "outcome" and r["key"] == key
    ]
    assert outcomes == ["started", "succeeded"]


def test_a_deferred_action_that_fails_skips_its_successors(tmp_path: Path) -> None:
    clock = [1000.0]
    executor = Deferring()
    runner = Runner(Engine(load_rules(ROOT / "rules")), None, executor, now=lambda: clock[0])
    at = datetime(2026, 1, 1, tzinfo=UTC)
    runner.ingest(
        [BackendConnectTimeout(time=at, source="ch", offset=0, line=1, share="fs0", socket="/s")]
    )
    runner.run_due()
    runner.complete(executor.pending[0], Status.TIMED_OUT)
    runner.run_due()
    assert ("fs0", "remount_guest") not in executor.ran
    assert runner.open == {}
    assert runner.waiting == []


class FailsOnFs1(Engine):
    """The shipped engine, with a bug that an event about fs1 finds."""

    def step(
        self, state: EngineState, item: Event | Tick | Command
    ) -> tuple[EngineState, list[Output]]:
        if isinstance(item, Event) and item.share == "fs1":
            raise RuntimeError("an engine bug")
        return super().step(state, item)


def test_an_event_the_engine_raises_on_is_counted_and_the_rest_are_decided(
    tmp_path: Path,
) -> None:
    runner = Runner(FailsOnFs1(load_rules(ROOT / "rules")), Journal(tmp_path / "j"))
    runner.start()
    at = datetime(2026, 1, 1, tzinfo=UTC)
    outputs = runner.ingest(
        [
            VirtiofsdExited(time=at, source="sup", offset=0, line=1, share="fs1"),
            VirtiofsdExited(time=at, source="sup", offset=10, line=2, share="fs0"),
        ]
    )
    decided = [o for o in outputs if isinstance(o, Decision)]
    assert {d.share for d in decided} == {"fs0"}
    assert runner.stats.failed_events == 1
    assert runner.stats.events == 1
