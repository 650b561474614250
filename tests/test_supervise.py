"""A held socket, and virtiofsd run on one by the calling process, with the real daemon.

The facts the watchdog stands on, measured here without healer: virtiofsd exits (0)
when its one client leaves; with the socket held a client that connects while no
virtiofsd runs waits in the backlog and the respawned daemon serves it (no
ECONNREFUSED). ``healer watch`` itself no longer runs virtiofsd: its holder does, and
the daemon outlives healer (tests/test_holder.py, tests/test_lifecycle.py).
``SupervisedVirtiofsd``, tested here, is what tests/test_ch_api.py's respawner runs on.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for

from healer.sim import VhostUserError, VhostUserFrontend
from healer.supervise import (
    DaemonInfo,
    HeldSocket,
    SupervisedVirtiofsd,
    is_listening,
)
from healer.supervise.process import exists


@pytest.fixture
def share(tmp_path: Path) -> Path:
    folder = tmp_path / "shared"
    folder.mkdir()
    (folder / "hello.txt").write_text("hello\n")
    return folder


@pytest.fixture
def supervised(virtiofsd: DaemonInfo, share: Path, tmp_path: Path) -> Iterator[SupervisedVirtiofsd]:
    held = HeldSocket(tmp_path / "fs.sock")
    daemon = SupervisedVirtiofsd(virtiofsd.argv(shared_dir=str(share)), held)
    yield daemon
    daemon.stop()
    held.close()


def test_the_held_socket_is_private_and_listening(tmp_path: Path) -> None:
    held = HeldSocket(tmp_path / "s.sock")
    try:
        assert (tmp_path / "s.sock").stat().st_mode & 0o777 == 0o600
        assert is_listening(tmp_path / "s.sock")
    finally:
        held.close()
    assert not (tmp_path / "s.sock").exists()
    assert not is_listening(tmp_path / "s.sock")


def test_a_regular_file_at_the_socket_path_is_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "s.sock").write_text("data")
    with pytest.raises(FileExistsError, match="not a socket"):
        HeldSocket(tmp_path / "s.sock")
    assert (tmp_path / "s.sock").read_text() == "data"


def test_virtiofsd_exits_when_its_client_leaves_and_the_respawn_serves_a_queued_client(
    supervised: SupervisedVirtiofsd,
) -> None:
    supervised.start()
    path = str(supervised.held.path)
    with VhostUserFrontend(path) as first:
        assert first.handshake()["features"]
    status = supervised.wait(10.0)
    assert status is not None
    assert (status.code, status.signal) == (0, None)  # exit 0 although the client is gone
    # No virtiofsd runs now; the connect still succeeds: it waits in the held backlog.
    with VhostUserFrontend(path, timeout_s=10.0) as second:
        supervised.start()
        assert second.get_features()
    assert supervised.starts == 2


def test_sigkill_is_seen_and_the_share_is_served_again(supervised: SupervisedVirtiofsd) -> None:
    pid = supervised.start()
    client = VhostUserFrontend(str(supervised.held.path))
    assert client.get_features()
    os.kill(pid, signal.SIGKILL)
    status = supervised.wait(10.0)
    assert status is not None
    assert status.signal == "SIGKILL"
    with pytest.raises((VhostUserError, OSError)):
        client.get_features()  # the old connection is dead
    client.close()
    supervised.start()
    with VhostUserFrontend(str(supervised.held.path)) as again:
        assert again.get_features()


def test_stderr_is_captured_line_by_line(supervised: SupervisedVirtiofsd) -> None:
    lines: list[bytes] = []
    supervised.on_line = lines.append
    supervised.start()
    with VhostUserFrontend(str(supervised.held.path)) as client:
        client.get_features()
    supervised.wait(10.0)
    assert any(b"Waiting for vhost-user socket connection" in line for line in lines)
    assert list(supervised.last_lines)[-len(lines) :] == lines[-len(supervised.last_lines) :]


def test_stop_leaves_no_process(supervised: SupervisedVirtiofsd) -> None:
    pid = supervised.start()
    status = supervised.stop()
    assert status is not None
    assert not exists(pid)


def test_a_process_killed_with_sigkill_takes_its_supervised_virtiofsd_along(
    virtiofsd: DaemonInfo, share: Path, tmp_path: Path
) -> None:
    """The parent-death signal: a test that dies leaves no daemon behind. (healer watch
    is the opposite now: killing it leaves the holder's daemon serving.)"""
    script = (
        "import sys, time\n"
        "from healer.supervise import HeldSocket, SupervisedVirtiofsd\n"
        f"held = HeldSocket({str(tmp_path / 'k.sock')!r})\n"
        f"argv = {virtiofsd.argv(shared_dir=str(share))!r}\n"
        "pid = SupervisedVirtiofsd(argv, held).start()\n"
        "print(pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert exists(child)
    parent.kill()
    parent.wait()
    parent.stdout.close()
    wait_for(lambda: not exists(child))
