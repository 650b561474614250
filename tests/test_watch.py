"""`healer watch` end to end with the real virtiofsd: kill it, see it healed, stop cleanly.

`healer watch` is the brain; the holder it starts runs the daemons and keeps them
serving when the brain stops (SIGTERM); `healer stop` ends everything. The guest is a
recording transport (an argv that appends its arguments to a file): the real guest rig
is tests/test_guest.py. Waits are bounded; no timing is asserted.
"""

from __future__ import annotations

import itertools
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import wait_for
from rulepatch import patch_text, shipped_rules, write_rules
from watching import (
    ROOT,
    daemon_pid,
    decisions,
    events,
    everything_stopped,
    holder_pid,
    journal_records,
    kill_serving_daemon,
    outcomes,
    running_watch,
    serving,
    start_watch,
    stop_everything,
    write_setup,
)

from healer.cli import _parser
from healer.engine import Action, Decision, Phase, Status
from healer.events import (
    ApiRequest,
    BackendConnectTimeout,
    VirtiofsdExited,
    VirtiofsdStarted,
    VirtiofsdStartFailed,
)
from healer.journal import EventRecord, TransitionRecord
from healer.sim import ChStandIn, VhostUserFrontend
from healer.supervise import DaemonInfo, is_listening
from healer.supervise.process import exists
from healer.vmm import ChApiClient


@pytest.fixture
def setup(tmp_path: Path, virtiofsd: DaemonInfo) -> Path:
    return write_setup(tmp_path)


@pytest.fixture
def watchdog(setup: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`healer watch` on the setup (its output in healer.log: a pipe nobody reads could
    fill and stop it); at the end the brain is killed if the test did not stop it, and
    `healer stop` ends the holder and its daemons."""
    config = setup / "healer.toml"
    with everything_stopped(config):
        proc = start_watch(config, setup / "healer.log")
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


def test_a_killed_virtiofsd_is_respawned_and_the_guest_remounted(
    setup: Path, watchdog: subprocess.Popen[bytes]
) -> None:
    config = setup / "healer.toml"
    sock = setup / "fs0.sock"
    wait_for(lambda: serving(config))
    client = VhostUserFrontend(str(sock), timeout_s=10)
    assert client.get_features()
    first = kill_serving_daemon(config)
    wait_for(lambda: not exists(first))
    client.close()
    # Connect right away: the holder's socket queues us until the respawn serves.
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

    def killed() -> list[VirtiofsdExited]:
        return [
            e
            for e in events(setup / "journal", VirtiofsdExited)
            if e.signal == "SIGKILL" and e.origin.pid == first
        ]

    # The exit is journaled once the daemon's last stderr lines are (bounded wait).
    wait_for(killed)
    assert killed()[0].source == "healer:fs0"  # healer's own report of its daemon
    # Whatever ran after the kill is a later daemon: wait for the one healer runs now.
    wait_for(lambda: serving(config) not in (None, first))
    watchdog.send_signal(signal.SIGTERM)
    assert watchdog.wait(timeout=30) == 0
    # SIGTERM stopped healer only: the respawned daemon and the socket stay.
    respawned = daemon_pid(config)
    assert respawned is not None
    assert respawned != first
    assert is_listening(sock)
    journal = setup / "journal"
    decided = {d.key: d.action for d in decisions(journal) if d.suppressed is None}
    done = {(o.key, o.status) for o in outcomes(journal)}
    respawns = [k for k, a in decided.items() if a == Action.RESPAWN]
    assert respawns
    # The respawn for the kill ran; a later one may still wait out its backoff at stop.
    assert (respawns[0], Status.SUCCEEDED) in done
    assert not [k for k in respawns if (k, Status.FAILED) in done]
    # Every daemon healer ran is numbered: the first, then the respawn(s), in order.
    started = [e.origin.generation or 0 for e in events(journal, VirtiofsdStarted)]
    assert started == sorted(started)
    assert started[:2] == [1, 2]


def test_sigterm_stops_healer_and_leaves_the_daemon_serving_healer_stop_ends_it(
    setup: Path, watchdog: subprocess.Popen[bytes]
) -> None:
    config = setup / "healer.toml"
    sock = setup / "fs0.sock"
    wait_for(lambda: serving(config))
    daemon = daemon_pid(config)
    assert daemon is not None
    holder = holder_pid(config)
    assert holder is not None
    watchdog.send_signal(signal.SIGTERM)
    assert watchdog.wait(timeout=30) == 0
    # healer is gone; its holder is not its child, and keeps the data path.
    assert exists(holder)
    assert daemon_pid(config) == daemon
    with VhostUserFrontend(str(sock), timeout_s=15) as vmm:  # served with no healer
        assert vmm.get_features()
    stopped = stop_everything(config)  # (it asserts that `healer stop` exits 0)
    assert "stopped the shares of" in stopped.stdout
    wait_for(lambda: not exists(holder) and not exists(daemon), 60)
    assert not sock.exists()
    assert holder_pid(config) is None


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


def deploy_command_lines() -> dict[str, list[list[str]]]:
    """file name -> the healer command lines in it: a unit's ``ExecStart*``,
    ``ExecReload`` and ``ExecStop*`` whose program is healer, a script's ``healer ...``
    lines (up to a redirection or ``&``); each without the program."""
    found: dict[str, list[list[str]]] = {}
    for path in sorted((ROOT / "deploy").iterdir()):
        lines = []
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if path.suffix == ".service":
                key, _, value = line.partition("=")
                if not key.startswith(("ExecStart", "ExecReload", "ExecStop")):
                    continue
                argv = shlex.split(value.lstrip("-@:+!"))  # systemd's exec prefixes
            elif line.startswith("healer "):
                tokens = list(shlex.shlex(line, posix=True, punctuation_chars=True))
                cut = [i for i, t in enumerate(tokens) if set(t) <= set("<>&|;()")]
                argv = tokens[: cut[0] if cut else len(tokens)]
            else:
                continue
            if argv and Path(argv[0]).name == "healer":
                lines.append(argv[1:])
        found[path.name] = lines
    return found


def test_the_systemd_units_and_vm_sh_snippet_use_real_commands() -> None:
    """Every healer command line in deploy/ parses with today's CLI."""
    found = deploy_command_lines()
    services = [name for name in found if name.endswith(".service")]
    assert services
    for name in services:  # every unit runs healer (the holder's unit: `healer hold`)
        assert found[name], f"{name} has no healer ExecStart"
    assert found["vm.sh-snippet.sh"], "the vm.sh snippet runs no healer command"
    parser = _parser()
    used = set()
    for name, commands in found.items():
        for args in commands:
            try:
                parsed = parser.parse_args(args)
            except SystemExit:
                pytest.fail(f"{name}: healer {shlex.join(args)} does not parse")
            used.add(parsed.command)
    assert used <= {"watch", "hold", "stop", "check"}
    assert "watch" in used


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

    def timeouts() -> list[EventRecord]:
        return [
            r
            for r in journal_records(setup / "journal")
            if isinstance(r, EventRecord) and isinstance(r.event, BackendConnectTimeout)
        ]

    for round_ in (1, 2):
        with running_watch(config):
            wait_for((setup / "fs0.sock").exists)
            if round_ == 1:
                with log.open("a") as f:
                    f.write(line)
            wait_for(lambda: len(timeouts()) >= 1)
    (record,) = timeouts()  # the restart resumed after it: not journaled twice
    assert record.stream is not None
    assert record.stream.startswith("ch@")
    actions = [d.action for d in decisions(setup / "journal")]
    assert actions[:3] == [Action.ENSURE, Action.READD, Action.REMOUNT]


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

            def readd_outcome() -> list[Status]:
                journal = setup / "journal"
                keys = {d.key for d in decisions(journal) if d.action == Action.READD}
                return [o.status for o in outcomes(journal) if o.key in keys]

            final = {Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT}
            wait_for(lambda: set(readd_outcome()) & final, 60)
            assert Status.SUCCEEDED in readd_outcome()
            devices = [
                d for d in api.info().get("config", {}).get("fs", []) if d.get("tag") == "fs0"
            ]
            assert [d.get("id") for d in devices] == ["fs0"]
    finally:
        ch.stop()


def test_a_virtiofsd_that_cannot_start_backs_off_opens_the_circuit_and_retries_slowly(
    setup: Path,
) -> None:
    """Missing shared dir: immediate exits. No busy loop: every daemon start is a
    decision, the respawns back off, the circuit opens and the retries are slow."""
    rules = shipped_rules()
    rules = replace(rules, policy=replace(rules.policy, backoff_initial_s=0.2, circuit_retry_s=2.0))
    config = setup / "healer.toml"
    text = patch_text(
        config.read_text(), str(ROOT / "rules"), str(write_rules(rules, setup / "rules"))
    )
    text = patch_text(
        text, f'shared_dir = "{setup / "shared"}"', f'shared_dir = "{setup / "missing"}"'
    )
    config.write_text(text)
    journal = setup / "journal"

    def opened() -> list[float]:
        return [
            r.transition.time
            for r in journal_records(journal)
            if isinstance(r, TransitionRecord) and r.transition.after == Phase.CIRCUIT_OPEN
        ]

    def retries() -> list[Decision]:
        return [d for d in decisions(journal) if d.rule == "circuit-retry" and d.suppressed is None]

    with running_watch(config):
        wait_for(opened, 60)
        wait_for(lambda: len(retries()) >= 2, 60)
    assert events(journal, VirtiofsdStartFailed)
    respawns = [d for d in decisions(journal) if d.action == Action.RESPAWN]
    ran = [d for d in respawns if d.suppressed is None]
    # No start without a decision: the first start, then one per respawn decided.
    starts = events(journal, VirtiofsdStarted)
    assert 1 < len(starts) <= 1 + len(ran)
    assert len(events(journal, VirtiofsdExited)) <= len(starts)
    waits = [d.not_before - d.time for d in ran]
    assert waits[0] == 0.0
    assert max(waits) >= 0.2  # later respawns backed off
    assert any(d.suppressed == "circuit open" for d in respawns)
    # Once open, the only respawns are the slow retries, circuit_retry (2 s) apart in
    # the engine's time.
    opened_at = opened()[0]
    assert {d.rule for d in ran if d.time >= opened_at} == {"circuit-retry"}
    assert all(b.time - a.time >= 2.0 for a, b in itertools.pairwise(retries()))


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
        return [e.message for e in events(setup / "journal", ApiRequest)]

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
            pid = daemon_pid(config)  # the storm goes on (until the circuit opens)
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass  # it ended by itself meanwhile
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
        # every death journaled (healer's report of its daemon) before healer stops
        wait_for(lambda: len(events(setup / "journal", VirtiofsdExited)) >= len(killed), 30)
        assert healer.poll() is None
    seen = requests()
    assert len(seen) == written
    assert len(set(seen)) == written  # each line once
    exits = [e.origin.pid for e in events(setup / "journal", VirtiofsdExited)]
    assert killed
    assert sorted(p for p in exits if p is not None) == sorted(killed)  # each death, once
    assert len(exits) == len(killed)
