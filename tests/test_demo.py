"""`healer demo`: the main job on an embedded default, with the real virtiofsd."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_for
from watching import decisions, everything_stopped, holder_pid, journal_records, outcomes

from healer import demo
from healer.engine import Phase, Status
from healer.journal import TransitionRecord
from healer.supervise import DaemonInfo


def test_the_demo_heals_every_fault_it_injects(tmp_path: Path, virtiofsd: DaemonInfo) -> None:
    """Every fault healed, journaled; and the demo stops what it started: its daemon and
    socket are the holder's (they would outlive healer), so it stops the holder too."""
    keep = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "healer", "demo", "--keep", str(keep)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    with everything_stopped(keep / "healer.toml"):  # whatever a failed demo left
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        wait_for(lambda: holder_pid(keep / "healer.toml") is None)
        assert not (keep / "demo.sock").exists()
        out = done.stdout
        for heading in ("fault 1:", "fault 2:", "fault 3:", "every fault healed without a human"):
            assert heading in out
        journal = keep / "journal"
        rules = {d.rule for d in decisions(journal)}
        assert "respawn-on-exit" in rules
        assert rules & {"restart-storm", "daemon-storm"}
        # The storm opened the circuit, and the share was served again after it (by the
        # slow retry, or by a respawn decided just before the circuit opened).
        phases = [
            (r.transition.before, r.transition.after)
            for r in journal_records(journal)
            if isinstance(r, TransitionRecord)
        ]
        assert (Phase.CIRCUIT_OPEN, Phase.HEALTHY) in phases
        assert [o for o in outcomes(journal) if o.status == Status.FAILED] == []
        assert "mount -t virtiofs demo /mnt/demo" in (keep / "guest.log").read_text()
        assert "# " in (keep / "report.md").read_text()  # the postmortem was written
        assert journal.stat().st_mode & 0o077 == 0


def test_without_virtiofsd_the_demo_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "find_virtiofsd", lambda: None)
    out = io.StringIO()
    assert demo.run_demo(out) == 3
    assert "apt-get install qemu-system-common" in out.getvalue()
    assert "apt-get install virtiofsd" in out.getvalue()
