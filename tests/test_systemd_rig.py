"""healer.systemd under a real systemd (PID 1 of a systemd-nspawn container, see
tests/systemd_rig.py): a Type=notify service (tests/notify_service.py) that keeps its
listening socket in systemd's file-descriptor store gets it back after a SIGKILL with a
client queued on it meanwhile, is watched by WatchdogSec= (kept up while it pings,
restarted when it stops), and reloads with RELOADING=1/READY=1. Select with ``-m systemd``.
Every wait is bounded; no time is asserted.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from systemd_rig import CHECKOUT, Container, RigError, booted, missing, require, tool

pytestmark = pytest.mark.systemd

SERVICE = Path(__file__).resolve().with_name("notify_service.py")
RUN_DIR = "/run/rigsvc"
LIMIT_S = 60.0  # a bound for systemd to act, not a target


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    with booted(tmp_path / "root") as running:
        yield running


def service_unit(name: str, *, hold: bool = False, extra: str = "") -> str:
    """The unit of a notify_service instance answering on /run/rigsvc/NAME.sock."""
    argv = [sys.executable, str(SERVICE), f"{RUN_DIR}/{name}.sock"]
    if hold:
        argv.append(f"{RUN_DIR}/{name}.hold")
    return f"""\
[Unit]
Description=healer rig: {name}
StartLimitIntervalSec=0

[Service]
Type=notify
ExecStart={" ".join(argv)}
ExecReload=/bin/kill -HUP $MAINPID
FileDescriptorStoreMax=4
Restart=always
RestartSec=0
LimitCORE=0
Environment=PYTHONUNBUFFERED=1
{extra}
"""


def connect(container: Container, name: str) -> socket.socket:
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.settimeout(LIMIT_S)
    try:
        client.connect(str(container.host_path(f"{RUN_DIR}/{name}.sock")))
    except BaseException:
        client.close()
        raise
    return client


def answer(client: socket.socket) -> dict[str, Any]:
    with client, client.makefile("rb") as reader:
        line = reader.readline()
    assert line.endswith(b"\n"), line
    found: dict[str, Any] = json.loads(line)
    return found


def ask(container: Container, name: str) -> dict[str, Any]:
    return answer(connect(container, name))


def test_the_container_runs_the_checkouts_venv(container: Container) -> None:
    assert container.run("cat", "/proc/1/comm").stdout == "systemd\n"
    assert container.run("systemctl", "is-system-running").stdout.strip() in (
        "running",
        "degraded",
    )
    # The venv's own healer, unchanged: checkout and base interpreter are bound.
    kinds = container.run(str(CHECKOUT / ".venv/bin/healer"), "kinds").stdout
    assert "VirtiofsdExited" in kinds
    # The container's /run is its own, and the host reaches it through /proc/PID/root.
    container.run("mkdir", "-p", RUN_DIR)
    container.run("touch", f"{RUN_DIR}/marker")
    assert container.host_path(f"{RUN_DIR}/marker").exists()
    assert not Path(RUN_DIR, "marker").exists()


def test_the_stored_listener_queues_a_client_across_a_sigkill(container: Container) -> None:
    unit = "rig-store.service"
    container.write_unit(unit, service_unit("store", hold=True))
    container.start(unit)
    first = ask(container, "store")
    assert first["from_store"] is False
    sock = container.host_path(f"{RUN_DIR}/store.sock")
    assert sock.stat().st_mode & 0o777 == 0o600
    assert container.prop(unit, "NFileDescriptorStore") == "1"

    # The restarted service holds off accepting while the hold file exists.
    container.host_path(f"{RUN_DIR}/store.hold").touch()
    container.kill(unit, "KILL")
    client = connect(container, "store")  # queued on the socket systemd holds, not refused
    try:
        container.wait(
            lambda: container.prop(unit, "NRestarts") == "1",
            "the restart after SIGKILL",
            LIMIT_S,
        )
        state = container.show(unit, "ActiveState", "SubState", "MainPID")
        assert (state["ActiveState"], state["SubState"]) == ("activating", "start")
        assert state["MainPID"] != str(first["pid"])
        client.setblocking(False)
        with pytest.raises(BlockingIOError):
            client.recv(1)  # nobody has accepted it yet
        client.settimeout(LIMIT_S)
        container.host_path(f"{RUN_DIR}/store.hold").unlink()
        second = answer(client)
    finally:
        client.close()
    assert second["pid"] != first["pid"]
    assert second["from_store"] is True
    assert second["inode"] == first["inode"]  # the very listener, back through LISTEN_FDS
    assert container.prop(unit, "ActiveState") == "active"
    journal = container.wait_journal(unit, "from the store: True")
    assert "Main process exited, code=killed, status=9/KILL" in journal


def test_the_watchdog_keeps_a_pinging_service_and_restarts_a_silent_one(
    container: Container,
) -> None:
    unit = "rig-watchdog.service"
    container.write_unit(unit, service_unit("watchdog", extra="WatchdogSec=2"))
    container.start(unit)
    assert container.prop(unit, "WatchdogUSec") == "2s"
    first = ask(container, "watchdog")
    # Pinging at half the interval: three intervals pass and the service stays.
    container.wait(lambda: ask(container, "watchdog")["pings"] >= 6, "six watchdog pings", LIMIT_S)
    now = ask(container, "watchdog")
    assert now["pid"] == first["pid"]
    assert container.prop(unit, "NRestarts") == "0"

    container.kill(unit, "USR1")  # the service stops pinging
    container.wait(
        lambda: container.prop(unit, "NRestarts") == "1", "the watchdog's restart", LIMIT_S
    )
    journal = container.wait_journal(unit, "Watchdog timeout")
    assert "watchdog pings stop" in journal
    container.wait(lambda: container.prop(unit, "ActiveState") == "active", "active", LIMIT_S)
    after = ask(container, "watchdog")
    assert after["pid"] != first["pid"]
    assert after["from_store"] is True
    assert after["inode"] == first["inode"]


def test_reload_is_reloading_then_ready(container: Container) -> None:
    unit = "rig-reload.service"
    container.write_unit(unit, service_unit("reload"))
    container.start(unit)
    first = ask(container, "reload")
    assert first["generation"] == 0
    assert container.prop(unit, "StatusText") == "serving, listener from the store: False"

    container.reload(unit)
    container.wait(lambda: container.prop(unit, "StatusText") == "generation 1", "READY=1", LIMIT_S)
    state = container.show(unit, "ActiveState", "SubState", "NRestarts", "MainPID")
    assert state == {
        "ActiveState": "active",
        "SubState": "running",
        "NRestarts": "0",
        "MainPID": str(first["pid"]),
    }
    after = ask(container, "reload")
    assert (after["pid"], after["generation"]) == (first["pid"], 1)
    assert "generation 1" in container.status(unit)
    assert "reloaded: generation 1" in container.wait_journal(unit, "reloaded: generation 1")


def test_stop_removes_the_root_and_refuses_while_something_is_mounted(tmp_path: Path) -> None:
    with booted(tmp_path / "root") as running:
        root = running.root
        assert running.init_alive()
    assert not running.init_alive()
    assert not root.exists()

    running = Container.boot(tmp_path / "again")
    try:
        mount_point = running.root / "mnt"
        mount_point.mkdir()
        subprocess.run([tool("mount"), "-t", "tmpfs", "tmpfs", str(mount_point)], check=True)
        try:
            with pytest.raises(RigError, match="still mounted"):
                running.stop()
            assert not running.init_alive()  # the container itself is gone
            assert (running.root / "etc").exists()  # the root is left as it was
        finally:
            subprocess.run([tool("umount"), str(mount_point)], check=True)
        running.remove()
        assert not running.root.exists()
    finally:
        running.stop()


def test_without_nspawn_ci_fails_and_elsewhere_it_skips(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no systemd-nspawn, nsenter nor unshare
    lacking = missing()
    assert lacking is not None
    assert "apt-get install" in lacking or lacking.startswith("root")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="in CI"):
        require()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="scripts/test installs it"):
        require()
