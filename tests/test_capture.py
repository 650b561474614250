"""A short command's output is kept up to a bound, its input fed, its time limited."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from healer.supervise.capture import run_captured

PRINT = [sys.executable, "-c"]


def test_output_over_the_bound_is_cut_and_the_rest_read_away() -> None:
    script = "import sys; sys.stdout.write('a' * (5 << 20)); sys.stderr.write('b' * 10)"
    done = run_captured([*PRINT, script], timeout_s=60, max_bytes=1000)
    assert done.returncode == 0  # the child was not blocked on a full pipe
    assert done.stdout == b"a" * 1000
    assert done.stdout_cut
    assert (done.stderr, done.stderr_cut) == (b"b" * 10, False)


def test_input_is_fed_and_the_exit_status_kept() -> None:
    script = "import sys; data = sys.stdin.read(); print(data.upper(), end=''); sys.exit(3)"
    done = run_captured([*PRINT, script], stdin=b"1\nrescan\n" * 20000, timeout_s=60)
    assert done.returncode == 3
    assert done.stdout == b"1\nRESCAN\n" * 20000
    assert not done.stdout_cut


def test_a_child_that_outlives_its_time_is_killed_and_reaped(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = (
        f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    )
    with pytest.raises(subprocess.TimeoutExpired):
        run_captured([*PRINT, script], timeout_s=5)
    with pytest.raises(ProcessLookupError):  # killed, and reaped: not even a zombie
        os.kill(int(pid_file.read_text()), 0)


def test_a_missing_program_is_an_os_error() -> None:
    with pytest.raises(FileNotFoundError):
        run_captured(["/nonexistent/ch-remote"], timeout_s=5)
