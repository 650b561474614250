"""Helpers for tests that run `healer watch` as a real process and read its journal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import orjson
import pytest

from healer.supervise.process import children

ROOT = Path(__file__).resolve().parent.parent


def kill_serving_daemon(parent: int) -> int:
    """SIGKILL healer's virtiofsd child; a pid that vanished meanwhile is looked up again."""
    for _ in range(100):
        pids = children(parent)
        if len(pids) == 1:
            try:
                os.kill(pids[0], signal.SIGKILL)
            except ProcessLookupError:
                continue
            return pids[0]
        time.sleep(0.01)
    pytest.fail("no single virtiofsd child to kill")


@contextmanager
def running_watch(config: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``healer watch`` for the duration of a block; it must stop cleanly on SIGTERM."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "healer", "watch", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def records(journal: Path) -> list[dict[str, object]]:
    out = []
    for segment in sorted(journal.glob("segment-*")):
        out += [
            orjson.loads(line) for line in segment.read_bytes().splitlines() if line.endswith(b"}")
        ]
    return out


def write_setup(tmp_path: Path, shares: tuple[str, ...] = ("fs0",)) -> Path:
    """A healer.toml supervising ``shares`` with the real virtiofsd, and a recording guest.

    The guest transport is a script that appends its argv to guest.log.
    """
    guest = tmp_path / "guest.py"
    guest.write_text(
        "import sys\n"
        f"with open({str(tmp_path / 'guest.log')!r}, 'a') as f:\n"
        "    f.write(' '.join(sys.argv[1:]) + '\\n')\n"
    )
    text = f'[healer]\njournal = "{tmp_path / "journal"}"\nrules = "{ROOT / "rules"}"\n\n'
    for name in shares:
        shared = tmp_path / ("shared" if name == shares[0] else f"shared-{name}")
        shared.mkdir(exist_ok=True)
        text += (
            f'[[share]]\nname = "{name}"\nsocket = "{tmp_path / f"{name}.sock"}"\n'
            f'shared_dir = "{shared}"\nmount_point = "/mnt/{name}"\n\n'
        )
    text += f'[guest]\nremount = ["{sys.executable}", "{guest}"]\nmount_point = "/mnt/fs0"\n'
    (tmp_path / "healer.toml").write_text(text)
    return tmp_path
