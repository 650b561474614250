"""`healer status` and the operator's commands against a running `healer watch`.

The real virtiofsd under the holder, the real control socket, the CLI run as a user
runs it. Each command is checked in what it did (the daemon's pid) and in the journal
(an operator record with the caller's uid, the decisions citing the operator).
A second uid is refused, by the directory's mode and by the peer check itself.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import wait_for
from watching import (
    daemons,
    decisions,
    journal_records,
    kill_serving_daemon,
    running_watch,
    write_setup,
)

from healer.engine import Action
from healer.journal import OperatorRecord
from healer.live.control import ControlServer, Peer, ask
from healer.supervise import DaemonInfo
from healer.supervise.process import exists

NOBODY = 65534


@pytest.fixture
def setup(tmp_path: Path, virtiofsd: DaemonInfo) -> Path:
    return write_setup(tmp_path, shares=("fs0", "fs1"))


def healer(*args: str, user: int | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "healer", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        user=user,
    )


def status(config: Path) -> dict[str, Any]:
    done = healer("status", "--config", str(config), "--json")
    assert done.returncode in (0, 1), done.stderr
    answer: dict[str, Any] = orjson.loads(done.stdout)
    return answer


def share(answer: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [s for s in answer["shares"] if s["name"] == name]
    assert len(found) == 1, name
    return found[0]


def test_status_pause_resume_and_restart_on_a_running_healer(setup: Path) -> None:
    config = setup / "healer.toml"
    journal = setup / "journal"
    with running_watch(config) as watch:
        wait_for(lambda: len(daemons(config)) == 2)
        wait_for((journal / "control.sock").exists)
        seen = status(config)
        assert seen["healer"]["pid"] == watch.pid
        assert [s["name"] for s in seen["shares"]] == ["fs0", "fs1"]
        fs0 = share(seen, "fs0")
        assert (fs0["phase"], fs0["paused"]) == ("healthy", False)
        assert fs0["daemon"]["pid"] == daemons(config)["fs0"]
        assert fs0["circuit"]["open"] is False
        human = healer("status", "--config", str(config))
        assert human.returncode == 0, human.stderr
        assert "fs0: healthy" in human.stdout
        assert f"pid: {watch.pid}" in human.stdout

        # pause: a dead daemon is not respawned, and status says so (exit 1)
        assert healer("pause", "fs0", "--config", str(config)).returncode == 0
        killed = kill_serving_daemon(config, "fs0")
        wait_for(lambda: any(d.suppressed == "paused by the operator" for d in decisions(journal)))
        assert not exists(killed)
        paused = healer("status", "--config", str(config))
        assert paused.returncode == 1
        assert "(paused by the operator)" in paused.stdout
        assert share(status(config), "fs0")["daemon"]["pid"] is None

        # resume: the daemon comes back
        assert healer("resume", "fs0", "--config", str(config)).returncode == 0
        wait_for(lambda: daemons(config).get("fs0") not in (None, killed))
        wait_for(lambda: share(status(config), "fs0")["daemon"]["pid"] is not None)

        # restart: one fresh daemon, one respawn, citing the operator
        before = daemons(config)["fs0"]
        done = healer("restart", "fs0", "--config", str(config))
        assert done.returncode == 0, done.stderr
        wait_for(lambda: daemons(config).get("fs0") not in (None, before))
        restarts = [d for d in decisions(journal) if d.rule == "operator-restart"]
        assert [(d.action, d.suppressed) for d in restarts] == [(Action.RESPAWN, None)]
        assert healer("restart", "fs9", "--config", str(config)).returncode == 1  # no such share
        assert watch.poll() is None
    given = [r for r in journal_records(journal) if isinstance(r, OperatorRecord)]
    assert [(r.command, r.share, r.uid) for r in given] == [
        ("pause", "fs0", os.getuid()),
        ("resume", "fs0", os.getuid()),
        ("restart", "fs0", os.getuid()),
    ]
    respawns = [d for d in decisions(journal) if d.action == Action.RESPAWN and d.share == "fs0"]
    assert len([d for d in respawns if d.suppressed is None]) == 1  # the restart alone
    # No healer runs: the status comes from the journal, and a command is refused.
    after = healer("status", "--config", str(config))
    assert "not running" in after.stdout
    assert "Traceback" not in after.stderr
    refused = healer("pause", "fs0", "--config", str(config))
    assert refused.returncode == 3
    assert "no healer runs" in refused.stderr


def as_nobody(control: Path) -> subprocess.CompletedProcess[str]:
    """Send a status request to ``control`` as another user (the system's Python: the
    project's venv is not readable by that user)."""
    probe = (
        "import socket, sys; s = socket.socket(socket.AF_UNIX); "
        f"s.connect({str(control)!r}); "
        's.sendall(b\'{"command": "status"}\\n\'); sys.stdout.write(s.recv(4096).decode())'
    )
    return subprocess.run(
        ["/usr/bin/python3", "-c", probe],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        user=NOBODY,
    )


def test_another_user_is_refused_by_the_journal_directory(setup: Path) -> None:
    config = setup / "healer.toml"
    control = setup / "journal" / "control.sock"
    with running_watch(config):
        wait_for(control.exists)
        setup.chmod(0o755)
        other = as_nobody(control)
        assert other.returncode != 0
        assert "PermissionError" in other.stderr
        assert stat.S_IMODE(control.stat().st_mode) == 0o600


def test_the_peer_check_refuses_another_uid_even_where_the_socket_is_open() -> None:
    """Defence in depth: a socket someone made world-writable still serves only healer's
    user and root (SO_PEERCRED)."""
    with tempfile.TemporaryDirectory(prefix="control", dir="/tmp") as name:
        open_dir = Path(name)
        open_dir.chmod(0o755)  # every user may reach the socket
        refused_by_the_peer_check(open_dir)


def refused_by_the_peer_check(tmp_path: Path) -> None:
    asked: list[Peer] = []

    def answer(request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        asked.append(peer)
        return {"ok": True}

    server = ControlServer(tmp_path / "control.sock", answer)
    server.start()
    try:
        (tmp_path / "control.sock").chmod(0o666)
        other = as_nobody(tmp_path / "control.sock")
        assert other.returncode == 0, other.stderr
        assert orjson.loads(other.stdout) == {
            "ok": False,
            "error": f"uid {NOBODY} may not control this healer",
        }
        assert asked == []
        assert server.refused == 1
    finally:
        server.close()


def test_a_journal_path_longer_than_a_socket_address_still_has_its_control_socket(
    tmp_path: Path,
) -> None:
    """A socket address holds 107 bytes of path; a journal deeper than that (a build tree,
    a test's temporary directory) still gets its control socket, bound and reached
    through the directory (the fresh-clone CI's demo failed so, "AF_UNIX path too long")."""
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    path = deep / "control.sock"
    assert len(os.fsencode(str(path))) > 107

    def answer(request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        return {"ok": True, "asked": request["command"], "uid": peer.uid}

    server = ControlServer(path, answer)
    server.start()
    try:
        assert stat.S_ISSOCK(path.lstat().st_mode)
        assert stat.S_IMODE(path.lstat().st_mode) == 0o600
        assert ask(deep, {"command": "status"}) == {
            "ok": True,
            "asked": "status",
            "uid": os.getuid(),
        }
    finally:
        server.close()
    assert not path.exists()


def test_healer_heals_without_a_control_socket_it_cannot_bind(
    tmp_path: Path, virtiofsd: DaemonInfo
) -> None:
    """The control socket is the operator's convenience, never a cause of an outage: a
    directory in its place is logged, and the share is still respawned after a kill."""
    setup = write_setup(tmp_path, shares=("fs0",))
    config = setup / "healer.toml"
    (setup / "journal").mkdir(mode=0o700, exist_ok=True)
    (setup / "journal" / "control.sock").mkdir()
    with running_watch(config) as watch:
        wait_for(lambda: "fs0" in daemons(config))
        killed = kill_serving_daemon(config, "fs0")
        wait_for(lambda: daemons(config).get("fs0") not in (None, killed))
        assert watch.poll() is None
        answer = healer("status", "--config", str(config), "--json")
        assert answer.returncode in (0, 1), answer.stderr
        assert orjson.loads(answer.stdout)["running"] is False  # read from the journal
    assert any(d.action is Action.RESPAWN for d in decisions(setup / "journal"))


def test_healer_journal_follows_a_running_healer(setup: Path) -> None:
    """`healer journal --follow` beside a running healer (which holds the journal's
    lock): a kill of fs0's virtiofsd appears as its exit, the respawn decided and its
    outcome, each once; `--share fs1` shows none of it."""
    config = setup / "healer.toml"
    rows: list[dict[str, Any]] = []
    with running_watch(config) as watch:
        wait_for(lambda: len(daemons(config)) == 2)
        argv = ["journal", "--config", str(config), "--follow", "--format", "jsonl"]
        with subprocess.Popen(
            [sys.executable, "-m", "healer", *argv], stdout=subprocess.PIPE
        ) as follow:
            assert follow.stdout is not None
            out = follow.stdout
            os.set_blocking(out.fileno(), False)
            pending = [b""]

            def more() -> bool:
                """Read what the follower printed; whether it printed anything yet."""
                pending[0] += out.read() or b""
                *complete, pending[0] = pending[0].split(b"\n")
                rows.extend(orjson.loads(line) for line in complete)
                return bool(rows)

            def respawned() -> bool:
                more()
                return any(
                    r["type"] == "outcome"
                    and r["action"] == "respawn_virtiofsd"
                    and r["status"] == "succeeded"
                    for r in rows
                )

            try:
                wait_for(more)  # its last rows came: it has read to the end
                kill_serving_daemon(config, "fs0")
                wait_for(respawned, limit_s=30)
            finally:
                follow.terminate()
        assert watch.poll() is None
    exits = [r for r in rows if r["type"] == "event" and r["kind"] == "VirtiofsdExited"]
    assert [e["share"] for e in exits] == ["fs0"]
    respawns = [r for r in rows if r["type"] == "decision" and r["action"] == "respawn_virtiofsd"]
    assert len(respawns) == 1
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(set(seqs))  # in journal order, none twice
    other = healer("journal", "--config", str(config), "--share", "fs1", "--format", "jsonl")
    assert other.returncode == 0, other.stderr
    about = {orjson.loads(line).get("share") for line in other.stdout.splitlines()}
    assert "fs0" not in about
