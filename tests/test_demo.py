"""`healer demo`: the main job on an embedded default, with the real virtiofsd."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from watching import records

from healer import demo


def test_the_demo_heals_every_fault_it_injects(tmp_path: Path, virtiofsd: tuple[str, str]) -> None:
    keep = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "healer", "demo", "--keep", str(keep)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for heading in ("fault 1:", "fault 2:", "fault 3:", "every fault healed without a human"):
        assert heading in out
    journal = records(keep / "journal")
    rules = {r["rule"] for r in journal if r["type"] == "decision"}
    assert "respawn-on-exit" in rules
    assert rules & {"restart-storm", "daemon-storm"}
    # The storm opened the circuit, and the share was served again after it (by the
    # slow retry, or by a respawn decided just before the circuit opened).
    phases = [(r["before"], r["after"]) for r in journal if r["type"] == "transition"]
    assert ("circuit-open", "healthy") in phases
    failed = [r for r in journal if r["type"] == "outcome" and r["status"] == "failed"]
    assert failed == []
    assert "mount -t virtiofs demo /mnt/demo" in (keep / "guest.log").read_text()
    assert "# " in (keep / "report.md").read_text()  # the postmortem was written
    assert (keep / "journal").stat().st_mode & 0o077 == 0


def test_without_virtiofsd_the_demo_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "find_virtiofsd", lambda: None)
    out = io.StringIO()
    assert demo.run_demo(out) == 3
    assert "apt-get install qemu-system-common" in out.getvalue()
    assert "apt-get install virtiofsd" in out.getvalue()
