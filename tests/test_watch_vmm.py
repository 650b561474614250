"""`healer watch` healing through the cloud-hypervisor stand-in when things go wrong.

The VMM's API is gone or answers 500; healer is killed -9 in the middle of a re-add
and started again; one share's re-add stalls while another share needs healing.
Real virtiofsd (run by the holder `healer watch` starts), real sockets, the stand-in's
real API and vhost-user front end. The stand-in's log lines are dated when they are
written, as cloud-hypervisor's are; time passes by waiting for it.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import wait_for
from rulepatch import patch_text, shipped_rules, write_rules
from watching import (
    ROOT,
    daemons,
    decisions,
    events,
    everything_stopped,
    journal_records,
    kill_serving_daemon,
    outcomes,
    running_watch,
    start_watch,
    write_setup,
)

from healer.engine import Action, Phase, Status
from healer.events import VirtiofsdClientConnected, VirtiofsdExited
from healer.journal import OutcomeRecord, TransitionRecord
from healer.sim import ChStandIn
from healer.sim.ch_log import ChLog
from healer.supervise import DaemonInfo
from healer.supervise.held import has_client
from healer.vmm import ChApiClient
from healer.vmm.chformat import worker_failed

FINAL = {Status.SUCCEEDED, Status.FAILED, Status.TIMED_OUT, Status.CLOSED}
DEDUPE_S = 1.0  # the policy's dedupe window in test_a_vmm_api_that_is_gone...
STALE_S = shipped_rules().policy.stale_session_s  # a session shorter was a dead connection


@pytest.fixture
def setup(tmp_path: Path, virtiofsd: DaemonInfo) -> Path:
    return write_setup(tmp_path, shares=("fs0", "fs1"))


def with_vmm(setup: Path, *, console: bool = False) -> Path:
    """The VMM's API socket and its log ``ch.log``; ``console``: also the guest's
    console, ``console.log``, marked as the guest's text."""
    config = setup / "healer.toml"
    config.write_text(
        config.read_text()
        + f'\n[vmm]\napi_socket = "{setup / "api.sock"}"\n'
        + f'\n[[source]]\npath = "{setup / "ch.log"}"\nname = "ch"\n'
    )
    (setup / "ch.log").touch()
    if console:
        with config.open("a") as text:
            text.write(
                f'\n[[source]]\npath = "{setup / "console.log"}"\nname = "console"\n'
                'trust = "guest"\n'
            )
        (setup / "console.log").touch()
    return config


def gave_up(setup: Path, share: str) -> None:
    """Append cloud-hypervisor's "gave up connecting" for ``share``'s socket, dated now."""
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    line = (
        f"{stamp} cloud-hypervisor:  70.500000s: <vmm> ERROR:virtio-devices/src/vhost_user/"
        "vu_common_ctrl.rs:462 -- Failed connecting the backend after trying for 1 "
        f"minute for socket {setup / f'{share}.sock'}: VhostUserProtocol(SocketConnect(Os "
        '{ code: 111, kind: ConnectionRefused, message: "Connection refused" }))\r\n'
    )
    with (setup / "ch.log").open("a") as log:
        log.write(line)


def outcomes_of(setup: Path, action: Action, share: str = "fs0") -> list[OutcomeRecord]:
    """Every outcome of ``action`` for ``share``, in journal order."""
    journal = setup / "journal"
    keys = {d.key for d in decisions(journal) if d.action == action and d.share == share}
    return [o for o in outcomes(journal) if o.key in keys]


def finals(setup: Path, action: Action, share: str = "fs0") -> list[OutcomeRecord]:
    return [o for o in outcomes_of(setup, action, share) if o.status in FINAL]


def past_the_dedupe_window(setup: Path) -> None:
    """Wait until the last re-add decided is older than the dedupe window: live, a line
    is dated when it is written, so the next give-up is a new request, not a repeat."""
    last = max(d.time for d in decisions(setup / "journal") if d.action == Action.READD)
    wait_for(lambda: time.time() > last + DEDUPE_S)


def mounts(setup: Path, share: str) -> list[str]:
    log = setup / "guest.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if line == f"mount -t virtiofs {share} /mnt/{share}"]


def test_a_vmm_api_that_is_gone_or_answers_500_fails_the_readd_and_healing_goes_on(
    setup: Path,
) -> None:
    config = with_vmm(setup)
    shipped = shipped_rules()
    rules = write_rules(
        replace(shipped, policy=replace(shipped.policy, dedupe_s=DEDUPE_S)), setup / "rules"
    )
    config.write_text(patch_text(config.read_text(), str(ROOT / "rules"), str(rules)))
    with running_watch(config) as healer:
        wait_for((setup / "fs0.sock").exists)
        # 1. Nothing listens on the API socket.
        gave_up(setup, "fs0")
        wait_for(lambda: finals(setup, Action.READD), 60)
        (failed,) = finals(setup, Action.READD)
        assert failed.status == Status.FAILED
        assert "api.sock" in failed.detail
        # Its remount was not attempted on a device that was not re-added.
        wait_for(lambda: finals(setup, Action.REMOUNT))
        assert [o.status for o in finals(setup, Action.REMOUNT)] == [Status.CLOSED]

        # 2. The API answers 500: its VMM thread is busy (a connect loop holds it).
        ch = ChStandIn(setup / "api.sock", setup / "ch-vmm.log", vmm_wait_s=0.3).start()
        try:
            ChApiClient(str(setup / "api.sock")).add_fs(
                tag="fs0", socket=str(setup / "fs0.sock"), device_id="fs0"
            )
            with ch.hold_vmm():
                past_the_dedupe_window(setup)
                gave_up(setup, "fs0")
                wait_for(lambda: len(finals(setup, Action.READD)) == 2, 60)
            busy = finals(setup, Action.READD)[1]
            assert busy.status == Status.FAILED
            assert "500" in busy.detail
            assert ("vm.info", 500) in [(path, code) for path, code, _ in ch.api_errors]
            # 3. The API is back: the next give-up is healed.
            past_the_dedupe_window(setup)
            gave_up(setup, "fs0")
            wait_for(lambda: len(finals(setup, Action.READD)) == 3, 60)
            assert finals(setup, Action.READD)[2].status == Status.SUCCEEDED
            wait_for(lambda: mounts(setup, "fs0"))
            assert healer.poll() is None
        finally:
            ch.stop()


def test_healer_killed_in_the_middle_of_a_readd_resumes_it_and_does_nothing_twice(
    setup: Path,
) -> None:
    """The guest never acknowledges the eject, so the re-add waits; healer dies there.
    Its daemons do not (they are the holder's): the next healer takes them over."""
    config = with_vmm(setup)
    ch = ChStandIn(setup / "api.sock", setup / "ch-vmm.log", eject_delay_s=None).start()
    try:
        with everything_stopped(config):
            first = start_watch(config)
            try:
                wait_for(lambda: len(daemons(config)) == 2)
                api = ChApiClient(str(setup / "api.sock"))
                api.add_fs(tag="fs0", socket=str(setup / "fs0.sock"), device_id="fs0")
                gave_up(setup, "fs0")
                # The re-add removed the device and now waits for it to be gone.
                wait_for(
                    lambda: [o for o in outcomes_of(setup, Action.READD) if o.status == "started"]
                )
                wait_for(lambda: ch.device_ids() == ["fs0"] and "fs0" not in configured(api))
                serving = daemons(config)
            finally:
                first.send_signal(signal.SIGKILL)
                first.wait(timeout=30)
            assert not mounts(setup, "fs0")
            # healer's death took no daemon along: both still run, the same processes.
            assert daemons(config) == serving

            with running_watch(config):
                # Started again: the unfinished re-add is checked (the device is not in the
                # VMM's config), so it runs again; the guest acknowledges the eject now.
                wait_for(
                    lambda: (
                        len([o for o in outcomes_of(setup, Action.READD) if o.status == "started"])
                        == 2
                    )
                )
                wait_for(lambda: ch.eject("fs0") or "fs0" in configured(api), 30)
                wait_for(lambda: finals(setup, Action.READD), 60)
                wait_for(lambda: mounts(setup, "fs0"))
            readd = outcomes_of(setup, Action.READD)
            # Started, cut short by the kill, checked on restart and run once more: done.
            assert [o.status for o in readd] == ["started", "started", "succeeded"]
            assert configured(api) == ["fs0"]
            # The eject ended the daemon that served across the kill: the second
            # healer, which took it over from the holder, journaled its end.
            ends = [e.origin.pid for e in events(setup / "journal", VirtiofsdExited)]
            assert serving["fs0"] in ends
            # Every remount decided ran exactly once, and the re-add's own remount ran
            # after the re-add. (The daemon the eject ended is respawned; it gets a
            # remount of its own unless its session was too short to count.)
            remounts = outcomes_of(setup, Action.REMOUNT)
            started = [o.key for o in remounts if o.status == "started"]
            assert len(started) == len(set(started))
            assert len(mounts(setup, "fs0")) == len(started)
            incident = readd[0].key.split("/")[0]
            assert (f"{incident}/remount_guest/1", "succeeded") in [
                (o.key, o.status) for o in remounts
            ]
            order = [(o.key, o.status) for o in outcomes(setup / "journal")]
            readd_done = order.index((readd[0].key, Status.SUCCEEDED))
            assert order.index((f"{incident}/remount_guest/1", Status.STARTED)) > readd_done
            adds = [line for line in ch.log_path.read_text().splitlines() if "VmAddFs" in line]
            assert len(adds) == 2  # the test's own add, and the re-add's one
    finally:
        ch.stop()


def configured(api: ChApiClient) -> list[str]:
    return [str(d.get("id")) for d in api.info().get("config", {}).get("fs") or []]


@contextmanager
def fs0_in_the_vm(
    setup: Path, *, console: bool = False
) -> Iterator[tuple[subprocess.Popen[bytes], ChStandIn]]:
    """healer watch on both shares, and the stand-in VMM with fs0 added (and served)."""
    config = with_vmm(setup, console=console)
    ch = ChStandIn(setup / "api.sock", setup / "ch-vmm.log").start()
    try:
        with running_watch(config) as healer:
            wait_for(lambda: len(daemons(config)) == 2)
            api = ChApiClient(str(setup / "api.sock"))
            api.add_fs(tag="fs0", socket=str(setup / "fs0.sock"), device_id="fs0")
            yield healer, ch
    finally:
        ch.stop()


def test_a_stalled_readd_of_one_share_does_not_hold_up_another_share(setup: Path) -> None:
    with fs0_in_the_vm(setup) as (_healer, ch):
        with ch.hold_vmm():  # fs0's re-add now hangs on the VMM's API
            gave_up(setup, "fs0")
            wait_for(lambda: outcomes_of(setup, Action.READD))
            # Meanwhile fs1's virtiofsd dies: it is respawned and remounted at once.
            kill_serving_daemon(setup / "healer.toml", "fs1")
            wait_for(lambda: mounts(setup, "fs1"))
            assert not finals(setup, Action.READD)  # fs0's re-add is still out
        wait_for(lambda: finals(setup, Action.READD), 120)
        assert finals(setup, Action.READD)[0].status == Status.SUCCEEDED
        wait_for(lambda: mounts(setup, "fs0"))


def healthy_again(setup: Path, share: str) -> int:
    """How often ``share`` came back to healthy (a recovery the engine believed: a
    session that lasted, not a connection that was gone at once)."""
    return sum(
        1
        for r in journal_records(setup / "journal")
        if isinstance(r, TransitionRecord)
        and r.transition.share == share
        and r.transition.after == Phase.HEALTHY
    )


def session_lasted(setup: Path, share: str, sessions: int) -> None:
    """Wait until ``share``'s newest session (of at least ``sessions``) has lasted the
    policy's stale-session window: live, its connect line is dated when it was read."""

    def connected() -> list[VirtiofsdClientConnected]:
        return [e for e in events(setup / "journal", VirtiofsdClientConnected) if e.share == share]

    wait_for(lambda: len(connected()) >= sessions)
    at = connected()[-1].time
    assert at is not None
    wait_for(lambda: time.time() > at.timestamp() + STALE_S)


def test_a_guest_reboot_is_served_again_by_a_respawned_virtiofsd(setup: Path) -> None:
    """The reset closes the VMM's connection: virtiofsd exits 0, healer starts the next,
    the VMM reconnects to it and the guest remounts. Each reboot comes once the session
    before it has lasted (a session cut at once is a dead connection, healed silently)."""
    with fs0_in_the_vm(setup) as (healer, ch):
        wait_for(lambda: ch.stats.connects == 1)

        def served_again(reboot: int) -> None:
            wait_for(lambda: ch.stats.connects == 1 + reboot)
            wait_for(lambda: len(mounts(setup, "fs0")) == reboot)
            wait_for(lambda: healthy_again(setup, "fs0") == reboot)

        for reboot in (1, 2):
            session_lasted(setup, "fs0", reboot)
            assert ch.guest_reboot()
            served_again(reboot)
        assert ch.stats.refused == 0
        assert ch.stats.not_found == 0
        assert healer.poll() is None
    exits = [e for e in events(setup / "journal", VirtiofsdExited) if e.share == "fs0"]
    assert [(e.status, e.signal) for e in exits] == [(0, None), (0, None)]
    assert {e.source for e in exits} == {"healer:fs0"}
    drained = [d for d in decisions(setup / "journal") if d.share == "fs0" and d.note]
    assert drained == []  # each reboot was a death healed, none a dead connection


def forge_needs_reset(log: Path, device: str) -> None:
    """Append cloud-hypervisor v53's "device needs a reset" line, as CH writes it."""
    level, where, text = worker_failed(device, 53)
    writer = ChLog(log, 53)
    try:
        writer.write(level, device, where, text)
    finally:
        writer.close()


def test_a_needs_reset_the_guest_forged_re_adds_nothing_while_the_host_sees_it_served(
    setup: Path,
) -> None:
    """The guest prints cloud-hypervisor's NEEDS_RESET line on its console: healer asks
    the VMM and the socket, finds the device served and removes nothing. The same line
    in the VMM's own log is believed (the contrast shows the line is read as a reset)."""
    with fs0_in_the_vm(setup, console=True) as (healer, ch):
        wait_for(lambda: ch.stats.connects == 1)
        wait_for(lambda: has_client(setup / "fs0.sock"))
        forge_needs_reset(setup / "console.log", "fs0")
        wait_for(lambda: finals(setup, Action.READD), 60)
        (checked,) = finals(setup, Action.READD)
        assert checked.status == Status.CLOSED
        assert "served" in checked.detail
        assert "VmRemoveDevice" not in (setup / "ch-vmm.log").read_text()
        assert ch.stats.connects == 1  # the session went on
        assert not [
            r
            for r in journal_records(setup / "journal")
            if isinstance(r, TransitionRecord) and r.transition.share == "fs0"
        ]  # no incident: the share never left healthy
        # The VMM's own log saying it at once: re-added (the guest's request is no
        # reason to take the host's own report for a repeat).
        forge_needs_reset(setup / "ch.log", "fs0")
        wait_for(lambda: len(finals(setup, Action.READD)) == 2, 60)
        assert finals(setup, Action.READD)[1].status == Status.SUCCEEDED
        assert "VmRemoveDevice" in (setup / "ch-vmm.log").read_text()
        assert healer.poll() is None
