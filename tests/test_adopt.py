"""Adopt mode: healer watches a virtiofsd someone else starts, and heals around it.

The "someone else" is the user's own restart loop, run here as a thread that starts
the real virtiofsd on its own socket and starts it again when it exits.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from watching import ROOT, records, running_watch

from healer.sim import VhostUserFrontend
from healer.supervise import has_client, read_pid_file, socket_owner
from healer.supervise.process import exists


def test_a_pid_file_names_a_live_process_or_nothing(tmp_path: Path) -> None:
    pid_file = tmp_path / "v.pid"
    assert read_pid_file(pid_file) is None  # missing
    for junk in ("", "abc", "-1", "0", "12x", "\x00\xff"):
        pid_file.write_text(junk)
        assert read_pid_file(pid_file) is None, junk
    pid_file.write_text(f"{os.getpid()}\n")
    assert read_pid_file(pid_file) == os.getpid()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True,
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    pid_file.write_text(dead)
    assert read_pid_file(pid_file) is None


def test_the_socket_owner_is_found_without_connecting(tmp_path: Path) -> None:
    path = tmp_path / "s.sock"
    assert socket_owner(path) is None
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(path))
        assert socket_owner(path) is None  # bound is not listening
        listener.listen(1)
        assert socket_owner(path) == os.getpid()
        assert not has_client(path)
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(path))
            served, _ = listener.accept()
            assert has_client(path)
            served.close()


class Launcher:
    """The user's `while true; do virtiofsd ...; sleep 0.2; done`, as a thread."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.argv = argv
        self.log = log
        self.pids: list[int] = []
        self.stop = threading.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self.stop.is_set():
            with self.log.open("ab") as log:
                self.proc = subprocess.Popen(self.argv, stderr=log, stdout=subprocess.DEVNULL)
            self.pids.append(self.proc.pid)
            self.proc.wait()
            self.stop.wait(0.2)

    def __enter__(self) -> Launcher:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        self.thread.join(10)


@pytest.fixture
def adopted(tmp_path: Path, virtiofsd: tuple[str, str]) -> Iterator[tuple[Path, Launcher]]:
    binary, flavor = virtiofsd
    (tmp_path / "shared").mkdir()
    sock = tmp_path / "fs0.sock"
    if flavor == "c":
        argv = [binary, f"--socket-path={sock}", "-o", f"source={tmp_path / 'shared'}"]
    else:
        argv = [binary, "--socket-path", str(sock), "--shared-dir", str(tmp_path / "shared")]
    guest = tmp_path / "guest.py"
    guest.write_text(
        "import sys\n"
        f"with open({str(tmp_path / 'guest.log')!r}, 'a') as f:\n"
        "    f.write(' '.join(sys.argv[1:]) + '\\n')\n"
    )
    (tmp_path / "healer.toml").write_text(
        f'[healer]\njournal = "{tmp_path / "journal"}"\nrules = "{ROOT / "rules"}"\n\n'
        f'[[share]]\nname = "fs0"\nmode = "adopt"\nsocket = "{sock}"\n'
        f'shared_dir = "{tmp_path / "shared"}"\nlog = "{tmp_path / "virtiofsd.log"}"\n\n'
        f'[guest]\nremount = ["{sys.executable}", "{guest}"]\nmount_point = "/mnt/fs0"\n'
    )
    with Launcher(argv, tmp_path / "virtiofsd.log") as launcher:
        wait_for(lambda: launcher.pids and socket_owner(sock) == launcher.pids[-1])
        yield tmp_path, launcher


def test_an_adopted_virtiofsd_that_dies_is_waited_for_and_the_guest_remounted(
    adopted: tuple[Path, Launcher],
) -> None:
    tmp_path, launcher = adopted
    sock = tmp_path / "fs0.sock"

    def tailed() -> list[dict[str, object]]:
        return [
            r["event"]  # type: ignore[misc]
            for r in records(tmp_path / "journal")
            if r["type"] == "event" and r["event"]["source"] == "virtiofsd:fs0"  # type: ignore[index]
        ]

    def adoptions() -> list[object]:
        return [
            r["event"]["origin"]["pid"]  # type: ignore[index]
            for r in records(tmp_path / "journal")
            if r["type"] == "event"
            and r["event"]["kind"] == "VirtiofsdListening"  # type: ignore[index]
            and r["event"]["source"] == "healer:fs0"  # type: ignore[index]
        ]

    with running_watch(tmp_path / "healer.toml") as healer:
        wait_for(lambda: launcher.pids[0] in adoptions())
        wait_for(tailed)  # and it reads the daemon's log
        # Served by the adopted daemon, which healer neither started nor touched.
        with VhostUserFrontend(str(sock), timeout_s=10) as vmm:
            assert vmm.get_features()
        first = launcher.pids[-1]
        wait_for(lambda: not exists(first))  # its client left: it exited by itself
        wait_for(lambda: len(launcher.pids) >= 2 and socket_owner(sock) == launcher.pids[-1])
        second = launcher.pids[-1]
        wait_for(lambda: second in adoptions())  # healer found the loop's new daemon
        os.kill(second, signal.SIGKILL)
        wait_for(lambda: len(launcher.pids) >= 3 and socket_owner(sock) == launcher.pids[-1])

        def exits() -> list[dict[str, object]]:
            return [
                r["event"]  # type: ignore[misc]
                for r in records(tmp_path / "journal")
                if r["type"] == "event" and r["event"]["kind"] == "VirtiofsdExited"  # type: ignore[index]
            ]

        wait_for(lambda: {first, second} <= {e["origin"].get("pid") for e in exits()})  # type: ignore[attr-defined]
        wait_for((tmp_path / "guest.log").exists)
        wait_for(lambda: len(adoptions()) >= 3)  # and the loop's third daemon is adopted
        assert healer.poll() is None
        assert not [p for p in launcher.pids[:-1] if exists(p)]
    journal = records(tmp_path / "journal")
    decided = {r["key"]: r["action"] for r in journal if r["type"] == "decision"}
    outcomes = {r["key"]: r["status"] for r in journal if r["type"] == "outcome"}
    respawns = [k for k, a in decided.items() if a == "respawn_virtiofsd"]
    # Healer started nothing: its "respawn" waited for the user's loop and succeeded.
    assert respawns
    assert outcomes[respawns[0]] == "succeeded"
    assert (tmp_path / "guest.log").read_text().splitlines()[:2] == [
        "umount /mnt/fs0",
        "mount -t virtiofs fs0 /mnt/fs0",
    ]
    # The daemon's own log, tailed, is attributed to the share.
    assert {e["share"] for e in tailed()} == {"fs0"}  # type: ignore[index]
    assert adoptions()[:3] == launcher.pids[:3]
