"""`healer watch` end to end with the real virtiofsd: kill it, see it healed, stop cleanly.

The guest is a recording transport (an argv that appends its arguments to a file):
the real guest rig is tests/test_guest.py. Waits are bounded; no timing is asserted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import wait_for
from watching import ROOT, kill_serving_daemon, records, running_watch, write_setup

from healer.sim import ChStandIn, VhostUserFrontend
from healer.supervise import is_listening
from healer.supervise.process import children, exists
from healer.vmm import ChApiClient


@pytest.fixture
def setup(tmp_path: Path, virtiofsd: tuple[str, str]) -> Path:
    return write_setup(tmp_path)


@pytest.fixture
def watchdog(setup: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "healer", "watch", "--config", str(setup / "healer.toml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate(timeout=30)


def test_a_killed_virtiofsd_is_respawned_and_the_guest_remounted(
    setup: Path, watchdog: subprocess.Popen[bytes]
) -> None:
    sock = setup / "fs0.sock"
    wait_for(lambda: sock.exists() and is_listening(sock) and children(watchdog.pid))
    client = VhostUserFrontend(str(sock), timeout_s=10)
    assert client.get_features()
    first = kill_serving_daemon(watchdog.pid)
    wait_for(lambda: not exists(first))
    client.close()
    # Connect right away: healer's held socket queues us until the respawn serves.
    with VhostUserFrontend(str(sock), timeout_s=15) as again:
        assert again.get_features()
    wait_for(
        lambda: (
            "ls /mnt/fs0" in (setup / "guest.log").read_text()
            if (setup / "guest.log").exists()
            else False
        )
    )
    assert (setup / "guest.log").read_text().splitlines()[:3] == [
        "umount /mnt/fs0",
        "mount -t virtiofs fs0 /mnt/fs0",
        "ls /mnt/fs0",
    ]

    def killed() -> list[dict[str, object]]:
        return [
            r
            for r in records(setup / "journal")
            if r["type"] == "event"
            and r["event"]["kind"] == "VirtiofsdExited"  # type: ignore[index]
            and r["event"]["fields"]["signal"] == "SIGKILL"  # type: ignore[index]
        ]

    # The exit is journaled once the daemon's last stderr lines are (bounded wait).
    wait_for(killed)
    watchdog.send_signal(signal.SIGTERM)
    assert watchdog.wait(timeout=30) == 0
    assert not sock.exists()
    assert not [p for p in (first,) if exists(p)]
    journal = records(setup / "journal")
    decided = {r["key"]: r["action"] for r in journal if r["type"] == "decision"}
    outcomes = {(r["key"], r["status"]) for r in journal if r["type"] == "outcome"}
    respawns = [k for k, a in decided.items() if a == "respawn_virtiofsd"]
    assert respawns
    # The respawn for the kill ran; a later one may still wait out its backoff at stop.
    assert (respawns[0], "succeeded") in outcomes
    assert not [k for k in respawns if (k, "failed") in outcomes]


def test_sigterm_stops_everything_cleanly(setup: Path, watchdog: subprocess.Popen[bytes]) -> None:
    sock = setup / "fs0.sock"
    wait_for(lambda: sock.exists() and children(watchdog.pid))
    (daemon,) = children(watchdog.pid)
    watchdog.send_signal(signal.SIGTERM)
    assert watchdog.wait(timeout=30) == 0
    assert not exists(daemon)
    assert not sock.exists()


def test_a_bad_configuration_starts_nothing(tmp_path: Path) -> None:
    (tmp_path / "healer.toml").write_text('[healer]\njournal = "relative"\n')
    result = subprocess.run(
        [sys.executable, "-m", "healer", "watch", "--config", str(tmp_path / "healer.toml")],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 4
    assert "journal 'relative' is not an absolute path" in result.stderr


def test_the_systemd_unit_and_vm_sh_snippet_use_real_commands() -> None:
    """Every healer command line in deploy/ parses with today's CLI."""
    unit = (ROOT / "deploy" / "healer.service").read_text()
    snippet = (ROOT / "deploy" / "vm.sh-snippet.sh").read_text()
    commands = [
        line.split("=", 1)[1].split()[1:]
        for line in unit.splitlines()
        if line.startswith("ExecStart")
    ]
    commands += [
        line.split()[1:4] for line in snippet.splitlines() if line.strip().startswith("healer ")
    ]
    assert len(commands) == 3
    for args in commands:
        help_args = [*[a for a in args if not a.startswith(("/", '"'))][:1], "--help"]
        result = subprocess.run(
            [sys.executable, "-m", "healer", *help_args], capture_output=True, check=False
        )
        assert result.returncode == 0, (args, result.stderr)
    assert "KillMode=mixed" in unit
    assert "--config" in snippet


def test_a_tailed_log_line_is_decided_on_and_not_read_twice(setup: Path) -> None:
    """A cloud-hypervisor line appended to a tailed log reaches the rules, once."""
    log = setup / "ch.log"
    log.write_text("cloud-hypervisor:   1.000000s: <vmm> INFO:vmm/src/lib.rs:1 -- booted\r\n")
    config = setup / "healer.toml"
    config.write_text(config.read_text() + f'\n[[source]]\npath = "{log}"\nname = "ch"\n')
    line = (
        "2026-01-01T00:00:00.000000000Z cloud-hypervisor:  70.500000s: <vmm> ERROR:"
        "virtio-devices/src/vhost_user/vu_common_ctrl.rs:462 -- Failed connecting the backend "
        f"after trying for 1 minute for socket {setup / 'fs0.sock'}: VhostUserProtocol(SocketConnect("
        'Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }))\r\n'
    )

    def timeouts() -> list[dict[str, object]]:
        return [
            r
            for r in records(setup / "journal")
            if r["type"] == "event" and r["event"]["kind"] == "BackendConnectTimeout"  # type: ignore[index]
        ]

    for round_ in (1, 2):
        with running_watch(config):
            wait_for((setup / "fs0.sock").exists)
            if round_ == 1:
                with log.open("a") as f:
                    f.write(line)
            wait_for(lambda: len(timeouts()) >= 1)
    (event,) = timeouts()  # the restart resumed after it: not journaled twice
    assert event["stream"].startswith("ch@")  # type: ignore[union-attr]
    journal = records(setup / "journal")
    actions = [r["action"] for r in journal if r["type"] == "decision"]
    assert actions[:3] == ["ensure_virtiofsd", "readd_fs", "remount_guest"]


def test_a_connect_timeout_re_adds_the_device_through_the_vmm_api(setup: Path) -> None:
    """The stand-in cloud-hypervisor holds the device; healer removes and adds it again."""
    ch = ChStandIn(setup / "api.sock", setup / "ch.log", version="v53").start()
    try:
        config = setup / "healer.toml"
        config.write_text(
            config.read_text()
            + f'\n[vmm]\napi_socket = "{setup / "api.sock"}"\n'
            + f'\n[[source]]\npath = "{setup / "ch.log"}"\nname = "ch"\n'
        )
        with running_watch(config):
            wait_for((setup / "fs0.sock").exists)
            api = ChApiClient(str(setup / "api.sock"), timeout_s=20)
            api.add_fs(tag="fs0", socket=str(setup / "fs0.sock"), device_id="fs0")
            stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
            line = (
                f"{stamp} cloud-hypervisor:  70.500000s: <vmm> ERROR:virtio-devices/src/vhost_user/"
                "vu_common_ctrl.rs:462 -- Failed connecting the backend after trying for 1 "
                f"minute for socket {setup / 'fs0.sock'}: VhostUserProtocol(SocketConnect(Os "
                '{ code: 111, kind: ConnectionRefused, message: "Connection refused" }))\r\n'
            )
            with (setup / "ch.log").open("a") as log:
                log.write(line)

            def readd_outcome() -> list[str]:
                journal = records(setup / "journal")
                keys = {
                    r["key"]
                    for r in journal
                    if r["type"] == "decision" and r["action"] == "readd_fs"
                }
                return [
                    str(r["status"]) for r in journal if r["type"] == "outcome" and r["key"] in keys
                ]

            wait_for(lambda: set(readd_outcome()) & {"succeeded", "failed", "timed_out"}, 60)
            assert "succeeded" in readd_outcome()
            devices = [
                d for d in api.info().get("config", {}).get("fs", []) if d.get("tag") == "fs0"
            ]
            assert [d.get("id") for d in devices] == ["fs0"]
    finally:
        ch.stop()


def test_a_virtiofsd_that_cannot_start_backs_off_opens_the_circuit_and_retries_slowly(
    setup: Path,
) -> None:
    """Missing shared dir: immediate exits. No busy loop: backoff, circuit, slow retries."""
    rules = setup / "rules"
    rules.mkdir()
    text = (ROOT / "rules" / "healing.toml").read_text()
    text = text.replace("backoff_initial = 1.0", "backoff_initial = 0.2")
    text = text.replace("circuit_retry = 300.0", "circuit_retry = 2.0")
    (rules / "healing.toml").write_text(text)
    config = setup / "healer.toml"
    config.write_text(
        config.read_text()
        .replace(str(ROOT / "rules"), str(rules))
        .replace(f'shared_dir = "{setup / "shared"}"', f'shared_dir = "{setup / "missing"}"')
    )
    started = time.monotonic()

    def journal_of(kind: str) -> list[dict[str, object]]:
        return [r for r in records(setup / "journal") if r["type"] == kind]

    def opened() -> bool:
        return any(r["after"] == "circuit-open" for r in journal_of("transition"))

    with running_watch(config):
        wait_for(opened, 60)
        wait_for(lambda: any(r["rule"] == "circuit-retry" for r in journal_of("decision")), 60)
    elapsed = time.monotonic() - started
    events = [r["event"] for r in journal_of("event")]
    exits = [e for e in events if e["kind"] == "VirtiofsdExited"]  # type: ignore[index]
    assert any(e["kind"] == "VirtiofsdStartFailed" for e in events)  # type: ignore[index]
    # Five quick exits open the circuit; after that one try per circuit_retry (2 s).
    assert len(exits) <= 5 + int(elapsed / 2.0) + 2
    respawns = [d for d in journal_of("decision") if d["action"] == "respawn_virtiofsd"]
    waits = [float(d["not_before"]) - float(d["time"]) for d in respawns]  # type: ignore[arg-type]
    assert waits[0] == 0.0
    assert max(waits) >= 0.2  # later respawns backed off
    assert any(d["suppressed"] == "circuit open" for d in respawns)


def test_log_rotation_of_every_kind_during_a_restart_storm_loses_and_repeats_nothing(
    setup: Path,
) -> None:
    """rename+create, copytruncate, delete+recreate, while virtiofsd keeps dying."""
    log = setup / "ch.log"
    log.touch()
    config = setup / "healer.toml"
    config.write_text(config.read_text() + f'\n[[source]]\npath = "{log}"\nname = "ch"\n')

    def line(i: int) -> str:
        return (
            f"cloud-hypervisor: {i}.000000s: <vmm> INFO:vmm/src/api/mod.rs:1450 -- "
            f'API request event: VmAddFs FsConfig {{ tag: "t{i}" }}\n'
        )

    def requests() -> list[str]:
        return [
            str(r["event"]["message"])  # type: ignore[index]
            for r in records(setup / "journal")
            if r["type"] == "event" and r["event"]["kind"] == "ApiRequest"  # type: ignore[index]
        ]

    written = 0

    def write(count: int) -> None:
        nonlocal written
        with log.open("a") as f:
            for _ in range(count):
                f.write(line(written))
                written += 1

    def all_read() -> bool:
        return len(requests()) >= written

    killed: list[int] = []
    with running_watch(config) as healer:
        write(1)
        wait_for(all_read)  # healer follows the file now
        for round_, how in enumerate(["rename", "copytruncate", "delete"] * 3):
            write(40)
            for pid in children(healer.pid):  # the storm goes on (until the circuit opens)
                try:
                    if b"virtiofsd" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                        continue  # a remount in flight
                    os.kill(pid, signal.SIGKILL)
                except (FileNotFoundError, ProcessLookupError):
                    continue  # it ended by itself meanwhile
                killed.append(pid)
            if how == "rename":  # the old file is read to its end, then the new one
                log.rename(setup / f"ch.log.{round_}")
                log.touch()
            elif how == "copytruncate":
                # Lines written after the last read and before the truncation are lost
                # by design of copytruncate (for every tailer): read them first.
                wait_for(all_read)
                (setup / f"ch.log.{round_}").write_bytes(log.read_bytes())
                with log.open("r+") as f:
                    f.truncate(0)
            else:  # deleted: the open descriptor is read to its end
                log.unlink()
                log.touch()
            # Before the next rotation healer has found the new file (a file rotated
            # away before any poll saw it is not followed: see README, limits).
            write(1)
            wait_for(all_read)
        wait_for(lambda: len(requests()) >= written, 30)
        assert healer.poll() is None
    seen = requests()
    assert len(seen) == written
    assert len(set(seen)) == written  # each line once
    exits = [
        r["event"]["origin"]["pid"]  # type: ignore[index]
        for r in records(setup / "journal")
        if r["type"] == "event" and r["event"]["kind"] == "VirtiofsdExited"  # type: ignore[index]
    ]
    assert killed
    assert sorted(exits) == sorted(killed)  # every death journaled, once
