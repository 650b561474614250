"""Crash tests: cut the journal at any byte, or kill -9 the loop at random moments.

Either way, after a restart every decision the rules make is journaled exactly once
and its action is executed exactly once: nothing lost, nothing repeated.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from healing_loop import World, drive, make_log
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HERE = Path(__file__).resolve().parent


def decided(journal_dir: Path) -> list[str]:
    keys = []
    for segment in sorted(journal_dir.glob("segment-*")):
        for line in segment.read_bytes().splitlines():
            record = orjson.loads(line)
            if record["type"] == "decision" and record["suppressed"] is None:
                keys.append(record["key"])
    return keys


def settled_unrun(journal_dir: Path) -> dict[str, str]:
    """Decisions closed without running, and why: after a restart, a decision whose
    incident had closed before it could run is superseded (and a step after it is
    skipped); an uninterrupted run has none of these."""
    closed = {}
    for segment in sorted(journal_dir.glob("segment-*")):
        for line in segment.read_bytes().splitlines():
            record = orjson.loads(line)
            if record["type"] == "outcome" and record["status"] == "closed":
                closed[record["key"]] = record["detail"]
    return {k: d for k, d in closed.items() if d.startswith(("superseded", "skipped"))}


def assert_each_once(journal_dir: Path, world: World, keys: list[str]) -> None:
    """Nothing lost, nothing repeated: every decision the rules make is journaled once,
    and run exactly once unless the journal says it was settled without running."""
    assert sorted(decided(journal_dir)) == sorted(keys)
    executed = Counter(world.executed())
    unrun = settled_unrun(journal_dir)
    assert max(executed.values()) == 1
    assert set(executed) | set(unrun) == set(keys)
    assert not set(executed) & set(unrun)
    for key, detail in unrun.items():  # a step is skipped only after one that did not run
        if detail.startswith("skipped"):
            assert detail.split()[1] not in executed, key


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], World, bytes]:
    """One uninterrupted run: the decisions and executions a crash must reproduce."""
    base = tmp_path_factory.mktemp("reference")
    log = base / "virtiofsd.log"
    make_log(log)
    world = World(base / "world", journal=base / "journal")
    drive(log, base / "journal", world)
    (segment,) = (base / "journal").glob("segment-*")
    keys = decided(base / "journal")
    assert len(keys) > 40
    assert sorted(world.executed()) == sorted(keys)
    assert settled_unrun(base / "journal") == {}
    return log, keys, world, segment.read_bytes()


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.floats(min_value=0.0, max_value=1.0))
def test_cutting_the_journal_anywhere_loses_and_repeats_nothing(
    reference: tuple[Path, list[str], World, bytes],
    tmp_path_factory: pytest.TempPathFactory,
    where: float,
) -> None:
    log, keys, world, journal_bytes = reference
    cut = int(where * len(journal_bytes))
    case = tmp_path_factory.mktemp("cut")
    (case / "journal").mkdir(mode=0o700)
    (case / "journal" / "segment-000000000001.jsonl").write_bytes(journal_bytes[:cut])
    # Actions ran only after their 'started' record was on disk, so the world after
    # the crash holds exactly those whose record lies within the cut.
    survivors = [k for k in world.executed() if world.positions[k] <= cut]
    (case / "world").write_text("".join(f"{k}\n" for k in survivors))
    drive(log, case / "journal", World(case / "world"))
    assert_each_once(case / "journal", World(case / "world"), keys)


def test_kill_9_at_random_moments(
    reference: tuple[Path, list[str], World, bytes], tmp_path: Path
) -> None:
    """A real process, SIGKILLed mid-run again and again, then left to finish.

    Kills are placed by progress, not by the clock: each round lets the loop run a
    random 1-8 more actions, then kills it, wherever it is.
    """
    log, keys, _, _ = reference
    rng = random.Random(20261125)  # noqa: S311 - test randomness, not crypto
    world = World(tmp_path / "w")
    command = [
        sys.executable,
        str(HERE / "crash_driver.py"),
        str(log),
        str(tmp_path / "j"),
        str(world.path),
    ]
    kills = 0
    for _ in range(200):
        target = len(world.executed()) + rng.randint(1, 8)
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        while proc.poll() is None and len(world.executed()) < target:
            time.sleep(0.001)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            kills += 1
            continue
        out, err = proc.communicate()
        assert proc.returncode == 0, err.decode()[-2000:]
        assert out.strip() == b"DONE"
        break
    else:
        pytest.fail("the loop never finished between kills")
    assert kills >= 3
    assert_each_once(tmp_path / "j", world, keys)
