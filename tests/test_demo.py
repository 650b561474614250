"""`healer demo`: the main job on an embedded default, with the real virtiofsd."""

from __future__ import annotations

import io
import os
import re
import signal
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
        assert "every fault healed without a human" in out
        # Each fault says when it came (UTC, to the millisecond) and how long it took.
        faults = re.findall(r"^fault (\d) at (\d\d:\d\d:\d\d\.\d{3})Z: ", out, re.M)
        assert [n for n, _ in faults] == ["1", "2", "3"]
        assert [_clock(t) for _, t in faults] == sorted(_clock(t) for _, t in faults)
        took = [float(s) for s in re.findall(r"^  healed in (\d+\.\d\d) s$", out, re.M)]
        assert len(took) == 3
        assert all(0 < s < 30 for s in took)  # the demo's bound per fault
        summary = out.split("\nsummary:", 1)[1]
        for (n, at), seconds in zip(faults, took, strict=True):
            assert f"  fault {n} at {at}Z healed in {seconds:.2f} s\n" in summary
        # A journal row is whole, however long: the VMM's FsConfig line ends in its " }".
        fs_config = [line for line in out.splitlines() if "event    FsDeviceCreating" in line]
        assert fs_config
        assert all(len(row) > 200 and row.endswith("queue_size: 1024 }") for row in fs_config)
        assert re.search(r"^  +\+\d+\.\d{3}s event    VirtiofsdStarted ", out, re.M)
        assert "removed" not in out  # --keep keeps
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


def test_without_keep_the_demo_removes_its_directory(tmp_path: Path, virtiofsd: DaemonInfo) -> None:
    """The temporary directory (journal, sockets, logs) goes at the end; it says so."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "healer", "demo"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "TMPDIR": str(scratch)},
    )
    made = re.search(r"files in (\S+)$", done.stdout, re.M)
    assert made, done.stdout[-3000:]
    root = Path(made.group(1))
    left = _naming(root)  # its virtiofsd would name its socket in the directory
    for pid in left:  # the configuration went with the directory: no `healer stop`
        os.kill(pid, signal.SIGKILL)
    assert left == [], "the demo left processes running"
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert root.parent == scratch
    assert list(scratch.iterdir()) == []
    assert f"removed {root} (healer demo --keep DIR keeps the files)" in done.stdout
    assert "postmortem report:" not in done.stdout  # nothing points into what is gone


def test_without_virtiofsd_the_demo_says_how_to_get_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(demo, "find_virtiofsd", lambda: None)
    out, err = io.StringIO(), io.StringIO()
    assert demo.run_demo(out, err=err) == 3
    assert out.getvalue() == ""
    lines = err.getvalue().splitlines()
    assert lines[0] == "healer: demo needs the real virtiofsd, and none was found"
    assert lines[1].startswith("  hint: ")
    assert "apt-get install qemu-system-common" in err.getvalue()
    assert "apt-get install virtiofsd" in err.getvalue()


def _naming(root: Path) -> list[int]:
    """Processes whose command line names ``root`` (or a path in it)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if proc.name.isdigit() and str(root).encode() in argv:
            found.append(int(proc.name))
    return found


def _clock(text: str) -> float:
    hours, minutes, seconds = text.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
