"""Adopt mode: healer watches a virtiofsd someone else starts, and heals around it.

The "someone else" is the user's own restart loop, run here as a thread that starts
the real virtiofsd on its own socket and starts it again when it exits. Each daemon
of the matrix runs with its default sandbox (the Rust one then forks at start: only
its child holds the socket) and with none (one process).
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
from watching import ROOT, decisions, events, holder_pid, outcomes, recording_guest, running_watch

from healer.engine import Action, Status
from healer.events import Event, VirtiofsdExited, VirtiofsdStarted
from healer.sim import VhostUserFrontend
from healer.supervise import AdoptedVirtiofsd, DaemonInfo, has_client, read_pid_file, socket_owner
from healer.supervise.adopt import daemon_of
from healer.supervise.process import children, exists, running_daemon


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


def daemon_pid(sock: Path) -> int | None:
    """The daemon serving ``sock``: the outermost of its fork chain, as adopt mode finds it."""
    owner = socket_owner(sock)
    return daemon_of(owner) if owner is not None else None


def launch_argv(virtiofsd: DaemonInfo, sock: Path, shared: Path, sandbox: str) -> list[str]:
    """How a user starts it on its own socket; ``none`` is the C daemon's ``chroot`` (it
    has no ``none``), one process like the Rust daemon's ``none``."""
    if virtiofsd.implementation == "c":
        mode = "namespace" if sandbox == "namespace" else "chroot"
        return [virtiofsd.path, f"--socket-path={sock}", "-o", f"source={shared},sandbox={mode}"]
    return [virtiofsd.path, "--socket-path", str(sock), "--shared-dir", str(shared),
            "--sandbox", sandbox]  # fmt: skip


@pytest.fixture(params=["namespace", "none"])
def sandbox(request: pytest.FixtureRequest) -> str:
    """The daemon's sandbox: the default ``namespace``, or one process."""
    mode: str = request.param
    return mode


def test_the_daemon_is_the_outer_process_and_its_end_is_seen(
    tmp_path: Path, virtiofsd: DaemonInfo, sandbox: str
) -> None:
    """By socket or pid file, adopt mode finds the process its launcher started (the
    Rust pid file names it too), never the sandbox child that holds the socket; the
    child's death ends the outer process, and that end is seen through its pidfd."""
    (tmp_path / "shared").mkdir()
    sock = tmp_path / "fs0.sock"
    argv = launch_argv(virtiofsd, sock, tmp_path / "shared", sandbox)
    log = (tmp_path / "virtiofsd.log").open("wb")
    daemon = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        forked = virtiofsd.implementation == "rust" and sandbox == "namespace"

        def holder() -> int | None:
            """Who should hold the listener once start-up has settled (the Rust
            daemon binds before it forks, so for a moment both or neither show)."""
            if not forked:
                return daemon.pid
            kids = children(daemon.pid)
            return kids[0] if kids else None

        wait_for(lambda: holder() is not None and socket_owner(sock) == holder())
        owner = socket_owner(sock)
        assert AdoptedVirtiofsd(str(sock)).locate() == daemon.pid
        if virtiofsd.implementation == "rust":
            pid_file = f"{sock}.pid"
            assert AdoptedVirtiofsd(str(sock), pid_file).locate() == daemon.pid
        found = running_daemon(daemon.pid)
        assert found is not None
        assert (found.implementation, found.version) == (
            virtiofsd.implementation,
            virtiofsd.version,
        )
        ended = threading.Event()
        adopted = AdoptedVirtiofsd(str(sock))
        adopted.watch_exit(daemon.pid, lambda _: ended.set())
        assert owner is not None
        os.kill(owner, signal.SIGKILL)  # the child only, where the daemon forked
        assert ended.wait(20)
        assert daemon.wait(20) == (247 if forked else -signal.SIGKILL)
    finally:
        if daemon.poll() is None:
            daemon.kill()
        daemon.wait(20)
        log.close()
    if forked:
        assert (
            b"ERROR virtiofsd::util] Child process terminated by signal 9"
            in (tmp_path / "virtiofsd.log").read_bytes()
        )


@pytest.fixture
def adopted(tmp_path: Path, virtiofsd: DaemonInfo, sandbox: str) -> Iterator[tuple[Path, Launcher]]:
    (tmp_path / "shared").mkdir()
    sock = tmp_path / "fs0.sock"
    argv = launch_argv(virtiofsd, sock, tmp_path / "shared", sandbox)
    guest = recording_guest(tmp_path)
    (tmp_path / "healer.toml").write_text(
        f'[healer]\njournal = "{tmp_path / "journal"}"\nrules = "{ROOT / "rules"}"\n\n'
        f'[[share]]\nname = "fs0"\nmode = "adopt"\nsocket = "{sock}"\n'
        f'shared_dir = "{tmp_path / "shared"}"\nlog = "{tmp_path / "virtiofsd.log"}"\n\n'
        f'[guest]\nremount = ["{sys.executable}", "{guest}"]\nmount_point = "/mnt/fs0"\n'
    )
    with Launcher(argv, tmp_path / "virtiofsd.log") as launcher:
        wait_for(lambda: launcher.pids and daemon_pid(sock) == launcher.pids[-1])
        yield tmp_path, launcher


def test_an_adopted_virtiofsd_that_dies_is_waited_for_and_the_guest_remounted(
    adopted: tuple[Path, Launcher],
) -> None:
    tmp_path, launcher = adopted
    sock = tmp_path / "fs0.sock"
    config = tmp_path / "healer.toml"
    journal = tmp_path / "journal"

    def tailed() -> list[Event]:
        return [e for e in events(journal, Event) if e.source == "virtiofsd:fs0"]

    def adoptions() -> list[int | None]:
        """The daemons healer found and reports as adopted (its own stream)."""
        return [
            e.origin.pid
            for e in events(journal, VirtiofsdStarted)
            if e.adopted and e.source == "healer:fs0"
        ]

    def exits() -> set[int | None]:
        return {e.origin.pid for e in events(journal, VirtiofsdExited)}

    with running_watch(config) as healer:
        wait_for(lambda: launcher.pids[0] in adoptions())
        wait_for(tailed)  # and it reads the daemon's log
        # Adopt mode starts nothing: no holder, and the daemon is the loop's own child.
        assert holder_pid(config) is None
        # Served by the adopted daemon, which healer neither started nor touched.
        with VhostUserFrontend(str(sock), timeout_s=10) as vmm:
            assert vmm.get_features()
        first = launcher.pids[-1]
        wait_for(lambda: not exists(first))  # its client left: it exited by itself
        wait_for(lambda: len(launcher.pids) >= 2 and daemon_pid(sock) == launcher.pids[-1])
        second = launcher.pids[-1]
        wait_for(lambda: second in adoptions())  # healer found the loop's new daemon
        os.kill(second, signal.SIGKILL)
        wait_for(lambda: len(launcher.pids) >= 3 and daemon_pid(sock) == launcher.pids[-1])
        wait_for(lambda: {first, second} <= exits())
        wait_for((tmp_path / "guest.log").exists)
        wait_for(lambda: len(adoptions()) >= 3)  # and the loop's third daemon is adopted
        assert healer.poll() is None
        assert not [p for p in launcher.pids[:-1] if exists(p)]
    done = {o.key: o.status for o in outcomes(journal)}
    respawns = [d.key for d in decisions(journal) if d.action == Action.RESPAWN]
    # Healer started nothing: its "respawn" waited for the user's loop and succeeded.
    assert respawns
    assert done[respawns[0]] == Status.SUCCEEDED
    assert (tmp_path / "guest.log").read_text().splitlines()[:2] == [
        "umount /mnt/fs0",
        "mount -t virtiofs fs0 /mnt/fs0",
    ]
    # The daemon's own log, tailed, is attributed to the share.
    assert {e.share for e in tailed()} == {"fs0"}
    assert adoptions()[:3] == launcher.pids[:3]
