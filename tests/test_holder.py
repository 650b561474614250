"""The holder with the real virtiofsd: the data path outlives the brain, and the holder.

Each test starts a real holder process through the client (as ``healer watch`` does),
the real daemon of the matrix, and a real vhost-user front end as the VMM's side.
Waits are bounded; no timing is asserted.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from conftest import wait_for
from hypothesis import given
from hypothesis import strategies as st

from healer.holder import protocol as p
from healer.holder.client import HolderClient, HolderError
from healer.holder.errors import Refused
from healer.holder.sockets import bind
from healer.holder.state import start_time
from healer.sim import VhostUserFrontend
from healer.supervise import DaemonInfo
from healer.supervise.process import children, exists


class Exits:
    """What a client's ``on_exit`` received."""

    def __init__(self) -> None:
        self.seen: list[p.Exited] = []
        self.lost = 0

    def __call__(self, gone: p.Exited) -> None:
        self.seen.append(gone)

    def gone(self) -> None:
        self.lost += 1


@pytest.fixture
def holder_dir(short_dir: Path) -> Iterator[Path]:
    """The holder's directory; whatever holder runs there at the end is stopped."""
    directory = short_dir / "holder"
    yield directory
    lock = directory / "holder.lock"
    if lock.exists():
        text = lock.read_text().strip()
        if text.isdigit():
            with_pid = int(text)
            try:
                os.kill(with_pid, signal.SIGTERM)
            except ProcessLookupError:
                return
            wait_for(lambda: not exists(with_pid), 20)


def connect(directory: Path, exits: Exits | None = None, *, start: bool = True) -> HolderClient:
    exits = exits or Exits()
    return HolderClient.connect(directory, start=start, on_exit=exits, on_lost=exits.gone)


def serve_share(
    client: HolderClient, daemon: DaemonInfo, root: Path, generation: int = 1
) -> p.Spawned:
    shared = root / "shared"
    shared.mkdir(exist_ok=True)
    if "fs0" not in client.listeners:
        client.listen("fs0", str(root / "fs0.sock"))
    return client.spawn("fs0", generation, daemon.argv(shared_dir=str(shared)))


def state_of(directory: Path) -> p.HolderState:
    client = connect(directory, start=False)
    client.close()
    return client.state


def served(sock: Path) -> int:
    with VhostUserFrontend(str(sock), timeout_s=15) as front:
        return front.get_features()


def holder_pid(directory: Path) -> int:
    return int((directory / "holder.lock").read_text().strip())


def test_a_daemon_started_by_the_holder_serves_and_its_files_are_private(
    virtiofsd: DaemonInfo, short_dir: Path, holder_dir: Path
) -> None:
    client = connect(holder_dir)
    spawned = serve_share(client, virtiofsd, short_dir)
    assert served(short_dir / "fs0.sock") > 0
    assert stat.S_IMODE((short_dir / "fs0.sock").stat().st_mode) == 0o600
    assert stat.S_IMODE(holder_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((holder_dir / "holder.sock").stat().st_mode) == 0o600
    err = Path(spawned.stderr_path)
    assert stat.S_IMODE(err.stat().st_mode) == 0o600
    wait_for(lambda: b"Waiting for vhost-user socket connection" in err.read_bytes())
    # the daemon is the holder's child, in a session of its own
    assert os.getsid(spawned.pid) == spawned.pid
    client.close()


def test_a_killed_daemon_is_reported_and_a_queued_connect_is_served_by_the_next(
    virtiofsd: DaemonInfo, short_dir: Path, holder_dir: Path
) -> None:
    exits = Exits()
    client = connect(holder_dir, exits)
    first = serve_share(client, virtiofsd, short_dir)
    os.kill(first.pid, signal.SIGKILL)
    wait_for(lambda: exits.seen)
    (gone,) = exits.seen
    assert (gone.share, gone.generation, gone.pid) == ("fs0", 1, first.pid)
    assert (gone.signal, gone.code, gone.known) == ("SIGKILL", None, True)
    # connect before the next daemon exists: queued on the held socket, not refused
    waiting = VhostUserFrontend(str(short_dir / "fs0.sock"), timeout_s=15)
    second = serve_share(client, virtiofsd, short_dir, generation=2)
    assert waiting.get_features() > 0
    waiting.close()
    assert second.pid != first.pid
    client.close()


def test_the_brain_going_away_leaves_a_session_serving(
    virtiofsd: DaemonInfo, short_dir: Path, holder_dir: Path
) -> None:
    client = connect(holder_dir)
    spawned = serve_share(client, virtiofsd, short_dir)
    front = VhostUserFrontend(str(short_dir / "fs0.sock"), timeout_s=15)
    assert front.get_features() > 0
    client.close()
    # a brain process killed with -9 while connected
    brain = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; "
            "from healer.holder.client import HolderClient; "
            "HolderClient.connect(Path(sys.argv[1]), start=False, on_exit=print, "
            "on_lost=lambda: None); print('up', flush=True); time.sleep(60)",
            str(holder_dir),
        ],
        stdout=subprocess.PIPE,
    )
    with brain:  # closes its pipe
        assert brain.stdout is not None
        assert brain.stdout.readline().strip() == b"up"
        brain.kill()
    assert front.get_features() > 0  # the same session, still served
    again = connect(holder_dir)
    share = again.state.share("fs0")
    assert share is not None
    assert share.daemon is not None
    assert (share.daemon.pid, share.daemon.generation, share.daemon.adopted) == (
        spawned.pid,
        1,
        False,
    )
    assert "fs0" in again.listeners  # the brain holds a copy of the listener
    front.close()
    again.close()


def test_an_exit_while_no_brain_listens_waits_for_the_next_one_until_acknowledged(
    virtiofsd: DaemonInfo, short_dir: Path, holder_dir: Path
) -> None:
    client = connect(holder_dir)
    spawned = serve_share(client, virtiofsd, short_dir)
    client.close()
    os.kill(spawned.pid, signal.SIGKILL)
    wait_for(lambda: not exists(spawned.pid))
    wait_for(lambda: state_of(holder_dir).exits != ())
    once = connect(holder_dir)
    assert [(e.generation, e.signal) for e in once.state.exits] == [(1, "SIGKILL")]
    once.close()
    twice = connect(holder_dir)
    assert len(twice.state.exits) == 1  # said again: the brain never acknowledged it
    twice.ack("fs0", 1)
    twice.close()
    assert state_of(holder_dir).exits == ()


def test_a_holder_killed_leaves_its_daemon_serving_and_the_next_holder_adopts_it(
    virtiofsd: DaemonInfo, short_dir: Path, holder_dir: Path
) -> None:
    exits = Exits()
    client = connect(holder_dir, exits)
    spawned = serve_share(client, virtiofsd, short_dir)
    inode = client.listen("fs0", str(short_dir / "fs0.sock"))
    copy = client.listeners["fs0"]
    front = VhostUserFrontend(str(short_dir / "fs0.sock"), timeout_s=15)
    assert front.get_features() > 0
    first = holder_pid(holder_dir)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: exits.lost == 1)
    assert front.get_features() > 0  # the daemon did not go with its holder
    second_exits = Exits()
    again = connect(holder_dir, second_exits)
    assert holder_pid(holder_dir) != first
    share = again.state.share("fs0")
    assert share is not None
    assert share.daemon is not None
    assert (share.daemon.pid, share.daemon.adopted) == (spawned.pid, True)
    assert again.listen("fs0", str(short_dir / "fs0.sock"), fd=copy) == inode
    front.close()  # its client leaves: the daemon exits, not being the new holder's child
    wait_for(lambda: second_exits.seen)
    (gone,) = second_exits.seen
    assert (gone.pid, gone.known, gone.code, gone.signal) == (spawned.pid, False, None, None)
    again.close()
    client.close()


def test_a_recorded_pid_that_is_now_another_process_is_not_adopted(
    short_dir: Path, holder_dir: Path
) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder_dir.mkdir(mode=0o700)
        record = {
            "v": 1,
            "shares": {
                "fs0": {
                    "socket": str(short_dir / "fs0.sock"),
                    "inode": None,
                    "generation": 3,
                    "daemon": {
                        "generation": 3,
                        "pid": sleeper.pid,
                        "started_at": time.time(),
                        "starttime": (start_time(sleeper.pid) or 0) + 1,  # not this process
                        "argv": ["virtiofsd"],
                    },
                }
            },
            "exits": [],
        }
        (holder_dir / "holder.json").write_bytes(orjson.dumps(record))
        client = connect(holder_dir)
        share = client.state.share("fs0")
        assert share is not None
        assert share.daemon is None
        assert [(e.generation, e.pid, e.known) for e in client.state.exits] == [
            (3, sleeper.pid, False)
        ]
        assert sleeper.poll() is None  # and it was left alone
        client.close()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_one_holder_per_directory_and_one_brain_per_holder(holder_dir: Path) -> None:
    client = connect(holder_dir)
    first = holder_pid(holder_dir)
    second = subprocess.run(
        [sys.executable, "-m", "healer.holder", "--dir", str(holder_dir)],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert second.returncode == 0
    assert f"holder already running: pid {first}" in second.stderr
    assert holder_pid(holder_dir) == first
    with pytest.raises(HolderError, match=f"busy: brain pid {os.getpid()} is connected"):
        connect(holder_dir, start=False)
    client.close()


@pytest.mark.parametrize(
    "number", [signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE, signal.SIGINT]
)
def test_stray_signals_are_logged_and_sigterm_stops_everything(
    virtiofsd: DaemonInfo, short_dir: Path, holder_dir: Path, number: signal.Signals
) -> None:
    client = connect(holder_dir)
    spawned = serve_share(client, virtiofsd, short_dir)
    pid = holder_pid(holder_dir)
    os.kill(pid, number)
    log = holder_dir / "holder.log"
    wait_for(lambda: f"{number.name} ignored" in log.read_text())
    assert served(short_dir / "fs0.sock") > 0
    os.kill(pid, signal.SIGTERM)
    wait_for(lambda: not exists(pid))
    assert not exists(spawned.pid)
    assert not (short_dir / "fs0.sock").exists()
    assert not (holder_dir / "holder.json").exists()
    client.close()


def test_bad_requests_get_an_error_and_the_holder_goes_on(
    virtiofsd: DaemonInfo, short_dir: Path, holder_dir: Path
) -> None:
    exits = Exits()
    client = connect(holder_dir, exits)
    with pytest.raises(HolderError, match="has no listener"):
        client.spawn("fs0", 1, ["/bin/true"])
    client.listen("fs0", str(short_dir / "fs0.sock"))
    with pytest.raises(HolderError, match="cannot run /nonexistent/virtiofsd"):
        client.spawn("fs0", 1, ["/nonexistent/virtiofsd", "--fd={fd}"])
    second = serve_share(client, virtiofsd, short_dir, generation=2)
    with pytest.raises(HolderError, match="still runs"):
        serve_share(client, virtiofsd, short_dir, generation=3)
    os.kill(second.pid, signal.SIGKILL)
    wait_for(lambda: exits.seen)
    with pytest.raises(HolderError, match="generation 2 is not above 2"):
        client.spawn("fs0", 2, ["/bin/true"])
    serve_share(client, virtiofsd, short_dir, generation=3)
    # garbage and an unknown op, straight on the wire
    raw = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    client.close()
    raw.connect(str(holder_dir / "holder.sock"))
    buffer = bytearray(p.MAX_MESSAGE)
    for data in (b"{not json", b'{"id": 5, "op": "format-disk"}', b'{"id": 6, "op": "spawn"}'):
        raw.send(data)
        received = p.receive(raw, buffer)
        assert received is not None
        answer = p.decode(received[0])
        assert isinstance(answer, p.Failed)
    raw.close()
    assert served(short_dir / "fs0.sock") > 0


def test_release_shutdown_and_an_in_place_upgrade(
    virtiofsd: DaemonInfo, short_dir: Path, holder_dir: Path
) -> None:
    exits = Exits()
    client = connect(holder_dir, exits)
    spawned = serve_share(client, virtiofsd, short_dir)
    front = VhostUserFrontend(str(short_dir / "fs0.sock"), timeout_s=15)
    assert front.get_features() > 0
    before = holder_pid(holder_dir)
    client.reexec()
    wait_for(lambda: exits.lost == 1)
    assert front.get_features() > 0  # served across the upgrade
    exits2 = Exits()
    again = connect(holder_dir, exits2, start=False)
    assert again.state.holder_pid == before
    assert again.state.reexecs == 1
    os.kill(spawned.pid, signal.SIGKILL)
    wait_for(lambda: exits2.seen)
    assert exits2.seen[0].signal == "SIGKILL"  # still its child: the real status
    front.close()
    serve_share(again, virtiofsd, short_dir, generation=2)
    again.release("fs0")
    assert not (short_dir / "fs0.sock").exists()
    assert again.state.share("fs0") is not None  # (the state is from hello)
    again.shutdown()
    wait_for(lambda: not exists(before))
    again.close()
    client.close()


_names = st.from_regex(p.SHARE_NAME, fullmatch=True)
_paths = st.text(alphabet="abc/", max_size=20).map(lambda t: "/" + t)


@given(
    st.one_of(
        st.builds(p.Hello, st.integers(1, 2**31), st.integers(0, 9), st.integers(1, 2**22)),
        st.builds(p.Listen, st.integers(1, 99), _names, _paths, st.integers(1, 65535)),
        st.builds(
            p.Spawn,
            st.integers(1, 99),
            _names,
            st.integers(1, 2**40),
            st.lists(st.text(min_size=1).filter(lambda t: "\0" not in t), min_size=1).map(tuple),
        ),
        st.builds(p.Ack, st.integers(1, 99), _names, st.integers(1, 99)),
        st.builds(
            p.Exited,
            _names,
            st.integers(1, 99),
            st.integers(1, 2**22),
            st.none() | st.integers(0, 255),
            st.none() | st.sampled_from(["SIGKILL", "SIGTERM"]),
            st.floats(0, 2e9),
            st.booleans(),
        ),
        st.builds(
            p.Failed, st.integers(0, 99), st.text(max_size=50).filter(lambda t: "\0" not in t)
        ),
    )
)
def test_every_message_survives_encoding(message: p.Message) -> None:
    assert p.decode(message.encode()) == message


# A daemon that starts a child which would outlive it (as the Rust daemon's sandbox child
# does for a few milliseconds after its parent is killed, holding the listener meanwhile).
_LINGERING = "import os, time\nos.fork()\ntime.sleep(60)\n"


def test_a_daemons_leftover_child_is_killed_before_its_exit_is_told(
    short_dir: Path, holder_dir: Path
) -> None:
    own: set[int] = set()
    told: list[tuple[int, list[int]]] = []  # (pid, its children alive when it was told)

    def on_exit(gone: p.Exited) -> None:
        told.append((gone.pid, [pid for pid in own if exists(pid)]))

    client = HolderClient.connect(holder_dir, start=True, on_exit=on_exit, on_lost=lambda: None)
    client.listen("fs0", str(short_dir / "fs0.sock"))
    spawned = client.spawn("fs0", 1, [sys.executable, "-c", _LINGERING, "--fd={fd}"])

    def forked() -> bool:
        own.update(children(spawned.pid))
        return bool(own)

    wait_for(forked)
    os.kill(spawned.pid, signal.SIGKILL)
    wait_for(lambda: told)
    assert told == [(spawned.pid, [])]
    assert not any(exists(pid) for pid in own)
    assert "fs0" in client.listeners  # the share goes on: the next daemon may start
    assert client.spawn("fs0", 2, [sys.executable, "-c", "import time; time.sleep(60)"]).pid
    client.close()


@pytest.mark.parametrize(
    ("mode", "owner", "refused"),
    [
        (0o700, None, False),
        (0o755, None, False),
        (0o1777, None, False),  # like /tmp: sticky, owned by healer's user (or root)
        (0o777, None, True),  # anyone may rename healer's socket away and bind theirs
        (0o1777, 65534, True),  # sticky, but its owner (nobody) may replace the socket
    ],
)
def test_a_share_socket_is_refused_in_a_directory_others_can_replace_it_in(
    short_dir: Path, mode: int, owner: int | None, refused: bool
) -> None:
    directory = short_dir / "run"
    directory.mkdir()
    directory.chmod(mode)
    if owner is not None:
        os.chown(directory, owner, -1)
    path = str(directory / "fs0.sock")
    if refused:
        with pytest.raises(Refused, match="writable by every user"):
            bind(path, 8)
        assert not os.path.lexists(path)
    else:
        bind(path, 8).close()
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
