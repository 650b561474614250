"""Dead connections in a listening socket's accept queue, with real sockets and the
real kernel: sock_diag reports them, drain_dead drops them and never a live one."""

from __future__ import annotations

import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healer.supervise.backlog import (
    UDIAG_SHOW_ICONS,
    UDIAG_SHOW_RQLEN,
    Drained,
    _accept_and_close,
    _icons,
    _is_dead,
    _parse_reply,
    _request,
    _rqueue,
    drain_dead,
    pending,
    queued,
)

BOUND_S = 10.0  # upper bound of every wait; no test asserts a duration


def _listen(path: Path, backlog: int = 32) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(backlog)
    return sock


@pytest.fixture
def sock_path(tmp_path: Path) -> Path:
    return tmp_path / "share.sock"


@pytest.fixture
def listener(sock_path: Path) -> Iterator[socket.socket]:
    with _listen(sock_path) as sock:
        yield sock


def probe(path: Path) -> None:
    """A connect-and-close probe: a dead connection left in the queue."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect(str(path))


def wrote_and_died(path: Path) -> None:
    """A client that sent its first request (like GET_FEATURES) and closed."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
        c.connect(str(path))
        c.sendall(b"\x01\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00")


def live_client(path: Path) -> socket.socket:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(BOUND_S)
    c.connect(str(path))
    return c


def ino(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def accept_bounded(listener: socket.socket) -> socket.socket:
    readable, _, _ = select.select([listener], [], [], BOUND_S)
    assert readable, "nothing to accept"
    conn, _addr = listener.accept()
    conn.settimeout(BOUND_S)
    return conn


def test_probes_in_front_of_a_live_client_are_dropped_and_the_client_kept(
    listener: socket.socket, sock_path: Path
) -> None:
    for _ in range(3):
        probe(sock_path)
    with live_client(sock_path) as client:
        assert queued(listener) == [0, 0, 0, ino(client)]
        assert pending(listener) == 4
        assert drain_dead(listener) == Drained(dropped=3, unexpected_live=0)
        assert queued(listener) == [ino(client)]
        assert pending(listener) == 1
        assert listener.gettimeout() is None  # blocking again, as it was
        assert os.get_blocking(listener.fileno())

        with accept_bounded(listener) as conn:
            client.sendall(b"ping")
            assert conn.recv(16) == b"ping"
            conn.sendall(b"pong")
            assert client.recv(16) == b"pong"
        assert queued(listener) == []


def test_a_client_process_killed_while_queued_is_dead(
    listener: socket.socket, sock_path: Path
) -> None:
    code = (
        "import os, socket, sys, time\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
        "s.connect(sys.argv[1])\n"
        "print(os.fstat(s.fileno()).st_ino, flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(sock_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], BOUND_S)
        assert ready, "the client process did not connect"
        child_ino = int(proc.stdout.readline())
        assert queued(listener) == [child_ino]  # alive while the process lives
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=BOUND_S) == -signal.SIGKILL
        assert queued(listener) == [0]
        assert drain_dead(listener) == Drained(dropped=1)
        assert queued(listener) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=BOUND_S)
        if proc.stdout is not None:
            proc.stdout.close()


def test_a_client_that_wrote_before_closing_is_dead(
    listener: socket.socket, sock_path: Path
) -> None:
    wrote_and_died(sock_path)
    with live_client(sock_path) as client:
        assert queued(listener) == [0, ino(client)]
        assert drain_dead(listener) == Drained(dropped=1)
        assert queued(listener) == [ino(client)]


def test_only_the_head_matters_a_live_client_first_keeps_the_dead_behind_it(
    listener: socket.socket, sock_path: Path
) -> None:
    """virtiofsd accepts one connection: with a live head it gets a live client, and
    the dead ones behind it are for the drain before the next daemon."""
    with live_client(sock_path) as client:
        probe(sock_path)
        wrote_and_died(sock_path)
        expected = [ino(client), 0, 0]
        assert queued(listener) == expected
        assert drain_dead(listener) == Drained(dropped=0)
        assert queued(listener) == expected
        with accept_bounded(listener) as conn:
            client.sendall(b"x")
            assert conn.recv(1) == b"x"
        assert queued(listener) == [0, 0]
        assert drain_dead(listener) == Drained(dropped=2)
        assert queued(listener) == []


def test_an_empty_queue(listener: socket.socket) -> None:
    assert queued(listener) == []
    assert pending(listener) == 0
    assert drain_dead(listener) == Drained(dropped=0)


def test_drain_restores_a_timeout_or_non_blocking_mode(
    listener: socket.socket, sock_path: Path
) -> None:
    for mode in (2.5, 0.0):
        listener.settimeout(mode)
        probe(sock_path)
        assert drain_dead(listener) == Drained(dropped=1)
        assert listener.gettimeout() == mode
        assert os.get_blocking(listener.fileno()) is False  # Python's timeouts are O_NONBLOCK
    listener.settimeout(None)
    probe(sock_path)
    assert drain_dead(listener) == Drained(dropped=1)
    assert os.get_blocking(listener.fileno()) is True


def test_sockets_without_an_accept_queue_give_none(tmp_path: Path) -> None:
    """None, not []: a socket that is not listening has no accept queue to report, and
    its RQLEN would count bytes, not connections."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with a, b:
        a.sendall(b"unread")
        for sock in (a, b):
            assert queued(sock) is None
            assert pending(sock) is None
            assert drain_dead(sock) is None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as bound:
        bound.bind(str(tmp_path / "bound-only.sock"))
        assert queued(bound) is None
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as inet:
        inet.bind(("127.0.0.1", 0))
        inet.listen(1)
        assert queued(inet) is None
    closed = _listen(tmp_path / "closed.sock")
    closed.close()
    assert queued(closed) is None
    assert pending(closed) is None


def test_the_accepted_end_of_a_connection_is_not_a_listener(
    listener: socket.socket, sock_path: Path
) -> None:
    with live_client(sock_path) as client, accept_bounded(listener) as conn:
        assert queued(conn) is None
        assert queued(client) is None
        assert queued(listener) == []


@pytest.mark.parametrize(
    ("netlink_protocol", "diag_family"),
    [
        (32, socket.AF_UNIX),  # >= MAX_LINKS: socket() fails with EPROTONOSUPPORT
        (4, 255),  # >= AF_MAX: sock_diag answers NLMSG_ERROR (EINVAL)
    ],
)
def test_sock_diag_unavailable_falls_back_and_leaves_the_queue_alone(
    listener: socket.socket, sock_path: Path, netlink_protocol: int, diag_family: int
) -> None:
    probe(sock_path)
    kw = {"netlink_protocol": netlink_protocol, "diag_family": diag_family}
    assert queued(listener, **kw) is None
    assert pending(listener, **kw) is None
    assert drain_dead(listener, **kw) is None
    assert queued(listener) == [0]  # nothing was accepted


def test_an_unknown_diag_family_really_is_refused_by_the_kernel(
    listener: socket.socket,
) -> None:
    sent = _request(listener, UDIAG_SHOW_ICONS, 4, 255)
    assert sent is not None
    reply, listener_ino = sent
    _len, nlmsg_type, _flags, _seq, _pid = struct.unpack_from("=IHHII", reply)
    assert nlmsg_type == 2  # NLMSG_ERROR
    (error,) = struct.unpack_from("=i", reply, 16)
    assert error == -22  # -EINVAL
    assert _parse_reply(reply, listener_ino) is None


def _real_reply(listener: socket.socket, show: int) -> tuple[bytes, int]:
    sent = _request(listener, show, 4, socket.AF_UNIX)
    assert sent is not None
    return sent


def test_every_truncation_of_a_real_reply_is_rejected(
    listener: socket.socket, sock_path: Path
) -> None:
    probe(sock_path)
    with live_client(sock_path) as client:
        reply, listener_ino = _real_reply(listener, UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN)
        attrs = _parse_reply(reply, listener_ino)
        assert _icons(attrs) == [0, ino(client)]
        assert _rqueue(attrs) == 2
        for cut in range(len(reply)):
            assert _parse_reply(reply[:cut], listener_ino) is None, cut
        # Another socket's inode, or another sequence number, is not our answer.
        assert _parse_reply(reply, listener_ino + 1) is None
        other_seq = reply[:8] + struct.pack("=I", 1) + reply[12:]
        assert _parse_reply(other_seq, listener_ino) is None


def test_inconsistent_attribute_lengths_are_rejected(listener: socket.socket) -> None:
    reply, listener_ino = _real_reply(listener, UDIAG_SHOW_ICONS)
    first_attr = 16 + 16
    nla_len, nla_type = struct.unpack_from("=HH", reply, first_attr)
    assert (nla_len, nla_type) == (4, 3)  # an empty UNIX_DIAG_ICONS
    for bad_len in (0, 3, len(reply)):
        bad = bytearray(reply)
        struct.pack_into("=H", bad, first_attr, bad_len)
        assert _parse_reply(bytes(bad), listener_ino) is None, bad_len
    # ICONS whose length is not a whole number of inodes.
    assert _icons({3: b"\x00\x00\x00"}) is None
    assert _rqueue({4: b"\x01\x00\x00\x00"}) is None
    assert _icons({}) is None  # no ICONS: not a listener


@settings(max_examples=300)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=2**32 - 1))
def test_random_replies_never_raise(reply: bytes, listener_ino: int) -> None:
    attrs = _parse_reply(reply, listener_ino)
    assert attrs is None or isinstance(attrs, dict)
    _icons(attrs)
    _rqueue(attrs)


def test_the_defensive_check_closes_a_live_connection_and_counts_it(
    listener: socket.socket, sock_path: Path
) -> None:
    """What drain_dead would do if another process had accepted meanwhile and the
    connection it accepted were live: it is closed and counted, not kept."""
    listener.settimeout(BOUND_S)
    with live_client(sock_path) as client:
        assert _accept_and_close(listener, 3) == (1, 1)  # stops at the live one
        assert client.recv(1) == b""  # the client sees the close
    assert _accept_and_close(listener, 2) == (0, 0)  # an empty queue does not block
    assert listener.gettimeout() == BOUND_S


def test_poll_hup_tells_dead_from_live(listener: socket.socket, sock_path: Path) -> None:
    with live_client(sock_path) as client:
        client.shutdown(socket.SHUT_WR)  # half-closed is still alive
        with accept_bounded(listener) as conn:
            assert not _is_dead(conn)
    wrote_and_died(sock_path)
    with accept_bounded(listener) as conn:
        assert _is_dead(conn)
        assert conn.recv(64)  # its bytes are still there, yet it is dead


LIVE, CLOSED, WROTE = "live", "closed", "wrote"


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(st.sampled_from([LIVE, CLOSED, WROTE]), max_size=12))
def test_queued_reports_the_pattern_and_drain_drops_the_leading_dead(
    pattern: list[str],
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.sock"
        with _listen(path, backlog=16) as lst:
            clients: list[socket.socket] = []
            expected: list[int] = []
            try:
                for kind in pattern:
                    if kind == LIVE:
                        clients.append(live_client(path))
                        expected.append(ino(clients[-1]))
                    else:
                        (probe if kind == CLOSED else wrote_and_died)(path)
                        expected.append(0)
                assert queued(lst) == expected
                assert pending(lst) == len(pattern)
                lead = next((i for i, kind in enumerate(pattern) if kind == LIVE), len(pattern))
                assert drain_dead(lst) == Drained(dropped=lead)
                assert queued(lst) == expected[lead:]
                if lead < len(pattern):  # the head is now the first live client
                    with accept_bounded(lst) as conn:
                        clients[0].sendall(b"hi")
                        assert conn.recv(2) == b"hi"
            finally:
                for c in clients:
                    c.close()
