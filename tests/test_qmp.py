"""The QMP client and the QEMU re-add sequence: a scripted monitor, then the real QEMU.

The scripted monitor answers like QEMU 7.2 (greeting, ids copied, events between a
command and its answer). The real QEMU runs without a guest: its ACPI unplug is never
acknowledged, which is exactly the stuck device, so the escalation is tested against
the real thing in well under a second of QEMU time. Waits are bounded; no timing is
asserted.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for

from healer.supervise import DaemonInfo, is_listening
from healer.vmm import (
    QemuDeviceStuck,
    QemuFsDevice,
    QemuReaddPolicy,
    QmpClient,
    QmpClosed,
    QmpCommandError,
    QmpTimeout,
    QmpUnreachable,
    describe_device,
    readd_fs_qemu,
)
from healer.vmm.qemu_readd import OnStuck

GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 22}}, "capabilities": []}}
Answer = Callable[[dict[str, Any]], list[dict[str, Any]]]


class Monitor:
    """A QMP server on a Unix socket; ``answer`` maps a command to what is sent back."""

    def __init__(self, path: Path, answer: Answer) -> None:
        self.path = path
        self.answer = answer
        self.received: list[dict[str, Any]] = []
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn, conn.makefile("rb") as lines:
            conn.sendall(json.dumps(GREETING).encode() + b"\r\n")
            for line in lines:
                command = json.loads(line)
                self.received.append(command)
                if command["execute"] == "qmp_capabilities":
                    replies: list[dict[str, Any]] = [{"return": {}, "id": "ID"}]
                else:
                    replies = self.answer(command)
                for reply in replies:
                    if reply.get("close"):
                        return
                    sent = {**reply, "id": command["id"]} if reply.get("id") == "ID" else reply
                    conn.sendall(json.dumps(sent).encode() + b"\r\n")

    def close(self) -> None:
        self.listener.close()

    def commands(self) -> list[str]:
        return [c["execute"] for c in self.received if c["execute"] != "qmp_capabilities"]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Answer], Monitor]]:
    """Start scripted monitors at tmp_path/qmp.sock; closed after the test."""
    started: list[Monitor] = []

    def start(answer: Answer) -> Monitor:
        started.append(Monitor(tmp_path / "qmp.sock", answer))
        return started[-1]

    yield start
    for monitor in started:
        monitor.close()


def ok(value: object = None) -> dict[str, Any]:
    return {"return": {} if value is None else value, "id": "ID"}


def event(name: str, **data: object) -> dict[str, Any]:
    return {"event": name, "data": data, "timestamp": {"seconds": 1, "microseconds": 5}}


def test_connect_negotiates_and_commands_carry_ids(
    tmp_path: Path, serve: Callable[[Answer], Monitor]
) -> None:
    monitor = serve(lambda c: [ok({"status": "running"})])
    with QmpClient(str(tmp_path / "qmp.sock"), timeout_s=10) as qmp:
        assert qmp.greeting["version"]["qemu"]["minor"] == 2
        assert qmp.execute("query-status") == {"status": "running"}
    assert monitor.received[0] == {"execute": "qmp_capabilities", "id": "healer-1"}
    assert monitor.received[1]["id"] == "healer-2"


def test_events_before_the_answer_are_kept_for_wait_event(
    tmp_path: Path, serve: Callable[[Answer], Monitor]
) -> None:
    def answer(command: dict[str, Any]) -> list[dict[str, Any]]:
        if command["execute"] == "device_del":
            # the event can come before the answer; an answer to an old id is skipped
            return [
                event("DEVICE_DELETED", device="other"),
                event("DEVICE_DELETED", device="fs0", path="/machine/peripheral/fs0"),
                {"return": {}, "id": "stale"},
                ok(),
            ]
        return [ok()]

    serve(answer)
    with QmpClient(str(tmp_path / "qmp.sock"), timeout_s=10) as qmp:
        mark = qmp.mark()
        qmp.execute("device_del", {"id": "fs0"})
        found = qmp.wait_event(
            "DEVICE_DELETED", lambda e: e.data.get("device") == "fs0", timeout_s=5, since=mark
        )
        assert found.data["path"] == "/machine/peripheral/fs0"
        assert found.timestamp == pytest.approx(1.000005)
        with pytest.raises(QmpTimeout):  # nothing after it: bounded, not a hang
            qmp.wait_event("DEVICE_DELETED", timeout_s=0.05, since=found.seq)


def test_errors_timeouts_and_a_closed_monitor_are_typed(
    tmp_path: Path, serve: Callable[[Answer], Monitor]
) -> None:
    def answer(command: dict[str, Any]) -> list[dict[str, Any]]:
        name = command["execute"]
        if name == "chardev-remove":
            desc = "Chardev 'char0' is busy"
            return [{"error": {"class": "GenericError", "desc": desc}, "id": "ID"}]
        if name == "silent":
            return []
        return [{"close": True}]

    serve(answer)
    qmp = QmpClient(str(tmp_path / "qmp.sock"), timeout_s=10)
    qmp.connect()
    with pytest.raises(QmpCommandError) as caught:
        qmp.execute("chardev-remove", {"id": "char0"})
    assert (caught.value.error_class, caught.value.desc) == (
        "GenericError",
        "Chardev 'char0' is busy",
    )
    with pytest.raises(QmpTimeout):
        qmp.execute("silent", timeout_s=0.05)
    with pytest.raises(QmpClosed):
        qmp.execute("quit")


def test_the_event_queue_is_bounded_and_counts_what_it_dropped(
    tmp_path: Path, serve: Callable[[Answer], Monitor]
) -> None:
    serve(lambda c: [*(event("RESET") for _ in range(5)), ok()])
    with QmpClient(str(tmp_path / "qmp.sock"), timeout_s=10, max_events=2) as qmp:
        qmp.execute("system_reset")
        assert len(qmp.events) == 2
        assert qmp.dropped_events == 3
        assert [e.seq for e in qmp.events] == [4, 5]


def test_a_malformed_event_is_counted_or_undated_never_raised(
    tmp_path: Path, serve: Callable[[Answer], Monitor]
) -> None:
    nested: object = "x"
    for _ in range(900):
        nested = [nested]
    sent: list[dict[str, Any]] = [
        {"event": "RESET", "timestamp": {"seconds": "soon", "microseconds": []}},
        {"event": "RESET", "timestamp": {"seconds": True, "microseconds": 0}},
        {"event": nested, "timestamp": {"seconds": 1, "microseconds": 0}},
        {"event": 7},
        event("STOP"),
    ]
    serve(lambda c: [*sent, ok()])
    with QmpClient(str(tmp_path / "qmp.sock"), timeout_s=10) as qmp:
        qmp.execute("system_reset")
        assert [(e.name, e.timestamp) for e in qmp.events] == [
            ("RESET", None),
            ("RESET", None),
            ("STOP", 1.000005),
        ]
        assert qmp.malformed_events == 2


def test_nothing_listening_is_unreachable(tmp_path: Path) -> None:
    with pytest.raises(QmpUnreachable, match="no such socket"):
        QmpClient(str(tmp_path / "missing.sock")).connect()
    (tmp_path / "file").write_text("")
    with pytest.raises(QmpUnreachable, match="not a socket"):
        QmpClient(str(tmp_path / "file")).connect()


def scripted_qemu(unplugs: bool) -> Answer:
    props = {
        "type": "vhost-user-fs-pci",
        "chardev": "char0",
        "tag": "hostshare",
        "addr": 16,
        "parent_bus": "/machine/i440fx/pci.0",
        "queue-size": 128,
    }

    def answer(command: dict[str, Any]) -> list[dict[str, Any]]:
        name, args = command["execute"], command.get("arguments", {})
        if name == "qom-get":
            return [ok(props[args["property"]])]
        if name == "device_del":
            return [ok(), event("DEVICE_DELETED", device="fs0")] if unplugs else [ok()]
        return [ok()]

    return answer


def known() -> QemuFsDevice:
    return QemuFsDevice(device_id="fs0", chardev_id="x", socket="/run/fs0.sock", tag="fs0")


def test_the_re_add_recreates_the_device_qom_described(
    tmp_path: Path, serve: Callable[[Answer], Monitor]
) -> None:
    monitor = serve(scripted_qemu(unplugs=True))
    checks: list[int] = []

    def is_ready() -> bool:  # virtiofsd is ready at the third look
        checks.append(1)
        return len(checks) > 2

    with QmpClient(str(tmp_path / "qmp.sock"), timeout_s=10) as qmp:
        done = readd_fs_qemu(qmp, known(), is_ready=is_ready)
    assert done.steps == ("describe", "device_del", "chardev_remove", "ready", "device_add")
    assert set(done.durations) == set(done.steps)
    assert len(checks) == 3  # waited for virtiofsd before connecting QEMU to it
    assert monitor.commands()[-4:] == ["device_del", "chardev-remove", "chardev-add", "device_add"]
    added = monitor.received[-1]["arguments"]
    assert added == {
        "driver": "vhost-user-fs-pci",
        "id": "fs0",
        "chardev": "char0",
        "tag": "hostshare",
        "bus": "pci.0",
        "addr": "0x02.0",
        "queue-size": 128,
    }
    backend = monitor.received[-2]["arguments"]["backend"]
    assert backend["data"] == {
        "addr": {"type": "unix", "data": {"path": "/run/fs0.sock"}},
        "server": False,
    }


@pytest.mark.parametrize(
    ("on_stuck", "escalation"), [("notify", "notify"), ("system_reset", "system_reset")]
)
def test_an_unplug_that_never_completes_escalates(
    serve: Callable[[Answer], Monitor], on_stuck: OnStuck, escalation: str
) -> None:
    monitor = serve(scripted_qemu(unplugs=False))
    policy = QemuReaddPolicy(device_del_timeout_s=0.05, on_stuck=on_stuck)
    with (
        QmpClient(str(monitor.path), timeout_s=10) as qmp,
        pytest.raises(QemuDeviceStuck) as caught,
    ):
        readd_fs_qemu(qmp, known(), is_ready=lambda: True, policy=policy)
    assert caught.value.escalation == escalation
    assert caught.value.steps == ("describe",)
    assert ("system_reset" in monitor.commands()) == (on_stuck == "system_reset")
    assert "chardev-remove" not in monitor.commands()  # nothing more is tried


# --- the real QEMU, no guest ----------------------------------------------------------


@dataclass
class RealQemu:
    qmp: Path
    socket: Path
    start_daemon: Callable[[], subprocess.Popen[bytes]]


@pytest.fixture
def qemu(tmp_path: Path, virtiofsd: DaemonInfo) -> Iterator[RealQemu]:
    """QEMU 7.2 with a vhost-user-fs device on a real virtiofsd, and no guest OS."""
    if not any(Path(d, "qemu-system-x86_64").exists() for d in os.get_exec_path()):
        if os.environ.get("CI") == "true":
            pytest.fail("qemu-system-x86_64 is required in CI: apt-get install qemu-system-x86")
        pytest.skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    (tmp_path / "shared").mkdir()
    binary, implementation = virtiofsd.path, virtiofsd.implementation
    sock = tmp_path / "vfs.sock"
    daemon_argv = (
        [binary, f"--socket-path={sock}", "-o", f"source={tmp_path / 'shared'}"]
        if implementation == "c"
        else [binary, "--socket-path", str(sock), "--shared-dir", str(tmp_path / "shared")]
    )
    daemons: list[subprocess.Popen[bytes]] = []

    def start_daemon() -> subprocess.Popen[bytes]:
        for earlier in daemons:  # it holds the socket's pid-file lock until it exits
            earlier.wait(30)
        daemons.append(subprocess.Popen(daemon_argv, stderr=subprocess.DEVNULL))
        wait_for(lambda: is_listening(sock))
        return daemons[-1]

    start_daemon()
    qmp = tmp_path / "qmp.sock"
    with (tmp_path / "qemu.stderr").open("wb") as err:
        vm = subprocess.Popen(
            [  # noqa: S607 - QEMU from PATH, as the rig starts it
                "qemu-system-x86_64",
                *("-accel", "tcg", "-m", "128", "-display", "none", "-nodefaults"),
                *("-object", "memory-backend-memfd,id=mem,size=128M,share=on"),
                *("-numa", "node,memdev=mem"),
                *("-chardev", f"socket,id=char0,path={sock}"),
                *("-device", "vhost-user-fs-pci,id=fs0,chardev=char0,tag=hostshare"),
                *("-qmp", f"unix:{qmp},server=on,wait=off"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )

    def answers() -> bool:
        assert vm.poll() is None, (tmp_path / "qemu.stderr").read_text()
        try:
            with QmpClient(str(qmp), timeout_s=10):
                pass
        except QmpUnreachable:
            return False
        return True

    try:
        wait_for(answers)
        yield RealQemu(qmp, sock, start_daemon)
    finally:
        vm.kill()
        vm.wait(10)
        for daemon in daemons:
            daemon.kill()
            daemon.wait(10)


def test_qom_describes_the_real_device(qemu: RealQemu) -> None:
    with QmpClient(str(qemu.qmp), timeout_s=10) as qmp:
        props = describe_device(qmp, "fs0")
        assert describe_device(qmp, "nope") is None
    assert props is not None
    assert (props["type"], props["chardev"], props["tag"]) == (
        "vhost-user-fs-pci",
        "char0",
        "hostshare",
    )
    assert isinstance(props["addr"], int)


def test_a_real_unplug_nobody_acknowledges_is_stuck_and_system_reset_is_sent(
    qemu: RealQemu,
) -> None:
    """No guest OS answers the ACPI unplug: the device stays, as with stuck guest I/O."""
    policy = QemuReaddPolicy(device_del_timeout_s=0.5, on_stuck="system_reset")
    device = replace(known(), socket=str(qemu.socket))
    with QmpClient(str(qemu.qmp), timeout_s=10) as qmp:
        with pytest.raises(QemuDeviceStuck) as caught:
            readd_fs_qemu(qmp, device, is_ready=lambda: True, policy=policy)
        assert caught.value.escalation == "system_reset"
        assert caught.value.device.chardev_id == "char0"  # as QOM described it
        # The reset completes the pending unplug; the sequence again adds it back.
        qmp.wait_event("RESET", timeout_s=10)
        qmp.wait_event("DEVICE_DELETED", lambda e: e.data.get("device") == "fs0", timeout_s=10)
        # chardev-remove ended the old virtiofsd's client: it exits; a new one serves.
        fresh: list[subprocess.Popen[bytes]] = []

        def ready() -> bool:
            if not fresh:
                fresh.append(qemu.start_daemon())
            return True

        done = readd_fs_qemu(qmp, caught.value.device, is_ready=ready, policy=policy)
        assert done.steps == ("describe", "chardev_remove", "ready", "device_add")
        props = describe_device(qmp, "fs0")
        assert props is not None
        assert (props["chardev"], props["tag"]) == ("char0", "hostshare")
