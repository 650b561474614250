"""healer.systemd against real sockets: what a Notifier sends (read back from an AF_UNIX
datagram socket standing in for systemd's, path and abstract), the watchdog variables, and
listen_fds in a child process that is handed LISTEN_* and inherited descriptors the way
systemd hands them."""

from __future__ import annotations

import array
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from healer.systemd import (
    SCM_MAX_FD,
    STATUS_MAX_BYTES,
    Notifier,
    listen_fds,
    under_systemd,
    watchdog_interval,
)


class Receiver:
    """The manager's end: one AF_UNIX datagram socket, read with a bounded wait."""

    def __init__(self, sock: socket.socket, notify_socket: str) -> None:
        self.sock = sock
        self.notify_socket = notify_socket
        sock.settimeout(10)

    def recv(self) -> tuple[str, list[int]]:
        """One datagram: its text and the descriptors that came with it (now ours)."""
        fds = array.array("i")
        msg, ancdata, _flags, _addr = self.sock.recvmsg(
            4096, socket.CMSG_SPACE(SCM_MAX_FD * fds.itemsize)
        )
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
        return msg.decode(), list(fds)

    def text(self) -> str:
        message, fds = self.recv()
        assert fds == []
        return message

    def assert_empty(self) -> None:
        """Nothing was sent (the check does not wait: sending is synchronous)."""
        self.sock.setblocking(False)
        with pytest.raises(BlockingIOError):
            self.sock.recv(4096)
        self.sock.settimeout(10)


@pytest.fixture(params=["path", "abstract"])
def receiver(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Receiver]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        if request.param == "path":
            path = str(tmp_path / "notify")
            sock.bind(path)
            yield Receiver(sock, path)
        else:
            name = f"healer-test-{uuid.uuid4().hex}"
            sock.bind("\0" + name)
            yield Receiver(sock, "@" + name)


@pytest.fixture
def notifier(receiver: Receiver) -> Notifier:
    found = Notifier.from_environ({"NOTIFY_SOCKET": receiver.notify_socket})
    assert found.enabled
    return found


def test_ready_status_watchdog_stopping_mainpid(notifier: Notifier, receiver: Receiver) -> None:
    assert notifier.ready()
    assert receiver.text() == "READY=1"
    assert notifier.ready("watching 2 shares")
    assert receiver.text() == "READY=1\nSTATUS=watching 2 shares"
    assert notifier.status("share a: healthy")
    assert receiver.text() == "STATUS=share a: healthy"
    assert notifier.watchdog()
    assert receiver.text() == "WATCHDOG=1"
    assert notifier.stopping()
    assert receiver.text() == "STOPPING=1"
    assert notifier.mainpid(4242)
    assert receiver.text() == "MAINPID=4242"
    assert notifier.failures == 0


def test_status_is_one_bounded_line(notifier: Notifier, receiver: Receiver) -> None:
    # A newline would smuggle in an assignment of its own (here READY=1).
    assert notifier.status("respawning\nREADY=1\r\x00\tdone")
    assert receiver.text() == "STATUS=respawning READY=1   done"
    assert notifier.status("é" * STATUS_MAX_BYTES)
    text = receiver.text()
    assert text == "STATUS=" + "é" * (STATUS_MAX_BYTES // 2)
    assert len(text.encode()) == len("STATUS=") + STATUS_MAX_BYTES


def test_reloading_then_ready_carries_the_monotonic_clock(
    notifier: Notifier, receiver: Receiver
) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert notifier.reloading("reloading the rules")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    lines = receiver.text().split("\n")
    assert lines[0] == "RELOADING=1"
    assert lines[1].startswith("MONOTONIC_USEC=")
    assert before <= int(lines[1].removeprefix("MONOTONIC_USEC=")) <= after
    assert lines[2:] == ["STATUS=reloading the rules"]
    assert notifier.ready()
    assert receiver.text() == "READY=1"


def test_store_fds_passes_the_very_socket(
    notifier: Notifier, receiver: Receiver, tmp_path: Path
) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(tmp_path / "held.sock"))
        listener.listen()
        other_r, other_w = os.pipe()
        try:
            assert notifier.store_fds("virtiofs-a", [listener.fileno(), other_r])
            message, fds = receiver.recv()
            assert message == "FDSTORE=1\nFDNAME=virtiofs-a"
            assert len(fds) == 2
            try:
                # The manager holds new descriptors for the same open files, not copies.
                for sent, got in zip([listener.fileno(), other_r], fds, strict=True):
                    assert got != sent
                    assert (os.fstat(got).st_dev, os.fstat(got).st_ino) == (
                        os.fstat(sent).st_dev,
                        os.fstat(sent).st_ino,
                    )
                with socket.socket(fileno=os.dup(fds[0])) as held:
                    assert held.getsockname() == str(tmp_path / "held.sock")
            finally:
                for fd in fds:
                    os.close(fd)
        finally:
            os.close(other_r)
            os.close(other_w)
        assert notifier.store_fds("no-poll", [listener.fileno()], poll=False)
        message, fds = receiver.recv()
        for fd in fds:
            os.close(fd)
        assert message == "FDSTORE=1\nFDNAME=no-poll\nFDPOLL=0"
        assert len(fds) == 1
    assert notifier.remove_fds("virtiofs-a")
    assert receiver.text() == "FDSTOREREMOVE=1\nFDNAME=virtiofs-a"
    assert notifier.failures == 0


@pytest.mark.parametrize("name", ["", "a:b", "tab\there", "x" * 256, "naïve"])
def test_names_systemd_would_refuse_are_not_sent(
    notifier: Notifier, receiver: Receiver, name: str
) -> None:
    r, w = os.pipe()
    try:
        assert not notifier.store_fds(name, [r])
        assert not notifier.remove_fds(name)
    finally:
        os.close(r)
        os.close(w)
    assert notifier.failures == 2
    receiver.assert_empty()


def test_nothing_to_store_and_bad_pids_are_counted(notifier: Notifier, receiver: Receiver) -> None:
    assert not notifier.store_fds("empty", [])
    assert not notifier.store_fds("negative", [-1])
    assert not notifier.mainpid(0)
    assert notifier.failures == 3
    receiver.assert_empty()


def test_without_systemd_every_call_is_a_no_op() -> None:
    quiet = Notifier.from_environ({})
    assert not quiet.enabled
    assert not quiet.ready("x")
    assert not quiet.watchdog()
    assert not quiet.reloading()
    assert not quiet.store_fds("a", [0])
    assert quiet.failures == 0
    # A transport of newer systemd that a host service does not speak
    assert not Notifier.from_environ({"NOTIFY_SOCKET": "vsock:2:1234"}).enabled


def test_a_manager_that_is_gone_is_counted_not_raised(tmp_path: Path) -> None:
    gone = Notifier(str(tmp_path / "nobody-listens"))
    assert gone.enabled
    assert not gone.ready()
    assert not gone.watchdog()
    assert gone.failures == 2
    too_long = Notifier("/" + "x" * 200)
    assert not too_long.ready()
    assert too_long.failures == 1


def test_a_manager_that_does_not_read_costs_one_timeout(receiver: Receiver) -> None:
    # The receiver's queue fills (net.unix.max_dgram_qlen); the next send gives up after
    # its timeout instead of blocking the caller.
    slow = Notifier(receiver.notify_socket, timeout=0.05)
    sent = 0
    while slow.watchdog():
        sent += 1
        assert sent < 10_000, "the queue never filled"
    assert sent > 0
    assert slow.failures == 1
    assert receiver.text() == "WATCHDOG=1"


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("3000000", None, 3.0),
        ("1500000", "self", 1.5),
        ("3000000", "other", None),
        ("3000000", "x", None),
        ("0", None, None),
        ("-5", None, None),
        ("three", None, None),
        (None, None, None),
        (None, "self", None),
    ],
)
def test_watchdog_interval(
    monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            own = {"self": str(os.getpid()), "other": "1"}
            monkeypatch.setenv(name, own.get(value, value))
    assert watchdog_interval() == expected


def test_under_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert not under_systemd()
    monkeypatch.setenv("INVOCATION_ID", uuid.uuid4().hex)
    assert under_systemd()
    monkeypatch.delenv("INVOCATION_ID")
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    assert under_systemd()


# The child does what systemd does between fork and exec: moves the passed descriptors to
# 3, 4, ..., sets LISTEN_PID to its own pid (exec keeps the pid) and LISTEN_FDS, then execs
# the probe, which prints what listen_fds() found.
LAUNCHER = r"""
import fcntl, os, sys
fds = [int(fd) for fd in sys.argv[1].split(",")]
high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in fds]
for fd in fds:
    os.close(fd)
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
    os.close(fd)
env = dict(os.environ, LISTEN_FDS=str(len(fds)))
env["LISTEN_PID"] = str(os.getpid() if sys.argv[2] == "own" else os.getppid())
os.execve(sys.executable, [sys.executable, "-c", sys.argv[3], sys.argv[4]], env)
"""

PROBE = r"""
import json, os, sys
from healer.systemd import listen_fds
found = listen_fds(unset_environment=sys.argv[1] == "unset")
opened = [fd for fd in range(3, 10) if os.path.exists(f"/proc/self/fd/{fd}")]
print(json.dumps({
    "found": found,
    "inodes": {fd: os.fstat(fd).st_ino for fd in opened},
    "inheritable": {fd: os.get_inheritable(fd) for fd in opened},
    "env": {k: os.environ.get(k) for k in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")},
}))
"""


def run_child(
    socks: list[socket.socket],
    *,
    names: str | None = None,
    pid: str = "own",
    unset: bool = True,
) -> dict[str, dict[str, object]]:
    """Hands ``socks`` to a child as systemd would and returns what its listen_fds saw."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    if names is not None:
        env["LISTEN_FDNAMES"] = names
    fds = [s.fileno() for s in socks]
    mode = "unset" if unset else "keep"
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, ",".join(map(str, fds)), pid, PROBE, mode],
        pass_fds=fds,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, dict[str, object]] = json.loads(done.stdout)
    return result


@pytest.fixture
def listeners(tmp_path: Path) -> Iterator[list[socket.socket]]:
    socks = []
    for name in ("first", "second", "third"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(tmp_path / name))
        sock.listen()
        socks.append(sock)
    yield socks
    for sock in socks:
        sock.close()


def inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def test_listen_fds_names_the_passed_sockets(listeners: list[socket.socket]) -> None:
    seen = run_child(listeners, names="virtiofs-a:metrics:virtiofs-a")
    assert seen["found"] == {"virtiofs-a": [3, 5], "metrics": [4]}
    # The very sockets, now close-on-exec, and the variables are gone.
    assert seen["inodes"] == {str(3 + i): inode(s) for i, s in enumerate(listeners)}
    assert seen["inheritable"] == {"3": False, "4": False, "5": False}
    assert seen["env"] == {"LISTEN_PID": None, "LISTEN_FDS": None, "LISTEN_FDNAMES": None}


def test_listen_fds_without_names_are_unknown(listeners: list[socket.socket]) -> None:
    seen = run_child(listeners[:2])
    assert seen["found"] == {"unknown": [3, 4]}
    assert seen["inodes"] == {"3": inode(listeners[0]), "4": inode(listeners[1])}


def test_listen_fds_with_fewer_names_or_empty_ones(listeners: list[socket.socket]) -> None:
    assert run_child(listeners, names="a")["found"] == {"a": [3], "unknown": [4, 5]}
    assert run_child(listeners, names="a::c")["found"] == {"a": [3], "unknown": [4], "c": [5]}


def test_listen_fds_for_another_process_are_left_alone(listeners: list[socket.socket]) -> None:
    # LISTEN_PID names the launcher's parent: the descriptors are not ours to take.
    seen = run_child(listeners[:1], names="a", pid="parent")
    assert seen["found"] == {}
    assert seen["inheritable"] == {"3": True}
    assert seen["env"] == {"LISTEN_PID": None, "LISTEN_FDS": None, "LISTEN_FDNAMES": None}


def test_listen_fds_can_keep_the_environment(listeners: list[socket.socket]) -> None:
    seen = run_child(listeners[:1], names="a", unset=False)
    assert seen["found"] == {"a": [3]}
    env = seen["env"]
    assert env["LISTEN_FDS"] == "1"
    assert env["LISTEN_FDNAMES"] == "a"
    assert env["LISTEN_PID"] is not None


@pytest.mark.parametrize(
    ("listen_pid", "count"), [("1", "1"), ("x", "1"), ("self", "x"), ("self", None), (None, "1")]
)
def test_listen_fds_ignores_what_is_not_for_us(
    monkeypatch: pytest.MonkeyPatch, listen_pid: str | None, count: str | None
) -> None:
    # Nothing is touched in this process: no descriptor is taken over for a wrong pid.
    for name, value in (("LISTEN_PID", listen_pid), ("LISTEN_FDS", count)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, str(os.getpid()) if value == "self" else value)
    assert listen_fds() == {}
    assert "LISTEN_PID" not in os.environ
    assert "LISTEN_FDS" not in os.environ
