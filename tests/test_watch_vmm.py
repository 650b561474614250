"""`healer watch` healing through the cloud-hypervisor stand-in when things go wrong.

The VMM's API is gone or answers 500; healer is killed -9 in the middle of a re-add
and started again; one share's re-add stalls while another share needs healing.
Real virtiofsd, real sockets, the stand-in's real API and vhost-user front end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import wait_for
from watching import records, running_watch, write_setup

from healer.sim import ChStandIn
from healer.supervise.process import children
from healer.vmm import ChApiClient

FINAL = {"succeeded", "failed", "timed_out", "closed"}


@pytest.fixture
def setup(tmp_path: Path, virtiofsd: tuple[str, str]) -> Path:
    return write_setup(tmp_path, shares=("fs0", "fs1"))


def with_vmm(setup: Path) -> Path:
    config = setup / "healer.toml"
    config.write_text(
        config.read_text()
        + f'\n[vmm]\napi_socket = "{setup / "api.sock"}"\n'
        + f'\n[[source]]\npath = "{setup / "ch.log"}"\nname = "ch"\n'
    )
    (setup / "ch.log").touch()
    return config


def gave_up(setup: Path, share: str, at: datetime) -> None:
    """Append cloud-hypervisor's "gave up connecting" for ``share``'s socket at ``at``."""
    stamp = at.isoformat().replace("+00:00", "Z")
    line = (
        f"{stamp} cloud-hypervisor:  70.500000s: <vmm> ERROR:virtio-devices/src/vhost_user/"
        "vu_common_ctrl.rs:462 -- Failed connecting the backend after trying for 1 "
        f"minute for socket {setup / f'{share}.sock'}: VhostUserProtocol(SocketConnect(Os "
        '{ code: 111, kind: ConnectionRefused, message: "Connection refused" }))\r\n'
    )
    with (setup / "ch.log").open("a") as log:
        log.write(line)


def outcomes(setup: Path, action: str, share: str = "fs0") -> list[tuple[str, str, str]]:
    """(decision key, status, detail) of every outcome of ``action`` for ``share``."""
    journal = records(setup / "journal")
    keys = {
        r["key"]
        for r in journal
        if r["type"] == "decision" and r["action"] == action and r["share"] == share
    }
    return [
        (str(r["key"]), str(r["status"]), str(r["detail"]))
        for r in journal
        if r["type"] == "outcome" and r["key"] in keys
    ]


def finals(setup: Path, action: str, share: str = "fs0") -> list[tuple[str, str, str]]:
    return [o for o in outcomes(setup, action, share) if o[1] in FINAL]


def mounts(setup: Path, share: str) -> list[str]:
    log = setup / "guest.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line for line in lines if line == f"mount -t virtiofs {share} /mnt/{share}"]


def test_a_vmm_api_that_is_gone_or_answers_500_fails_the_readd_and_healing_goes_on(
    setup: Path,
) -> None:
    config = with_vmm(setup)
    start = datetime.now(UTC)
    with running_watch(config) as healer:
        wait_for((setup / "fs0.sock").exists)
        # 1. Nothing listens on the API socket.
        gave_up(setup, "fs0", start)
        wait_for(lambda: finals(setup, "readd_fs"), 60)
        ((_, status, detail),) = finals(setup, "readd_fs")
        assert status == "failed"
        assert "api.sock" in detail
        # Its remount was not attempted on a device that was not re-added.
        wait_for(lambda: finals(setup, "remount_guest"))
        assert [o[1] for o in finals(setup, "remount_guest")] == ["closed"]

        # 2. The API answers 500: its VMM thread is busy (a connect loop holds it).
        ch = ChStandIn(setup / "api.sock", setup / "ch-vmm.log", vmm_wait_s=0.3).start()
        try:
            ChApiClient(str(setup / "api.sock")).add_fs(
                tag="fs0", socket=str(setup / "fs0.sock"), device_id="fs0"
            )
            with ch.hold_vmm():
                gave_up(setup, "fs0", start + timedelta(seconds=30))
                wait_for(lambda: len(finals(setup, "readd_fs")) == 2, 60)
            (_, status, detail) = finals(setup, "readd_fs")[1]
            assert status == "failed"
            assert "500" in detail
            assert ("vm.info", 500) in [(path, code) for path, code, _ in ch.api_errors]
            # 3. The API is back: the next give-up is healed.
            gave_up(setup, "fs0", start + timedelta(seconds=60))
            wait_for(lambda: len(finals(setup, "readd_fs")) == 3, 60)
            assert finals(setup, "readd_fs")[2][1] == "succeeded"
            wait_for(lambda: mounts(setup, "fs0"))
            assert healer.poll() is None
        finally:
            ch.stop()


def test_healer_killed_in_the_middle_of_a_readd_resumes_it_and_does_nothing_twice(
    setup: Path,
) -> None:
    """The guest never acknowledges the eject, so the re-add waits; healer dies there."""
    config = with_vmm(setup)
    ch = ChStandIn(setup / "api.sock", setup / "ch-vmm.log", eject_delay_s=None).start()
    healer = [sys.executable, "-m", "healer", "watch", "--config", str(config)]
    try:
        first = subprocess.Popen(healer, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(lambda: len(children(first.pid)) == 2)
            api = ChApiClient(str(setup / "api.sock"))
            api.add_fs(tag="fs0", socket=str(setup / "fs0.sock"), device_id="fs0")
            gave_up(setup, "fs0", datetime.now(UTC))
            # The re-add removed the device and now waits for it to be gone.
            wait_for(lambda: [o for o in outcomes(setup, "readd_fs") if o[1] == "started"])
            wait_for(lambda: ch.device_ids() == ["fs0"] and "fs0" not in configured(api))
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait(timeout=30)
        assert not mounts(setup, "fs0")

        with running_watch(config):
            # Started again: the unfinished re-add is checked (the device is not in the
            # VMM's config), so it runs again; the guest acknowledges the eject now.
            wait_for(
                lambda: len([o for o in outcomes(setup, "readd_fs") if o[1] == "started"]) == 2
            )
            wait_for(lambda: ch.eject("fs0") or "fs0" in configured(api), 30)
            wait_for(lambda: finals(setup, "readd_fs"), 60)
            wait_for(lambda: mounts(setup, "fs0"))
        readd = outcomes(setup, "readd_fs")
        # Started, cut short by the kill, checked on restart and run once more: done.
        assert [o[1] for o in readd] == ["started", "started", "succeeded"]
        assert configured(api) == ["fs0"]
        # Every remount decided ran exactly once, and the re-add's own remount ran
        # after the re-add. (Its eject also ended the daemon that served meanwhile:
        # that is an incident of its own, with a remount of its own.)
        remounts = outcomes(setup, "remount_guest")
        started = [key for key, status, _ in remounts if status == "started"]
        assert len(started) == len(set(started))
        assert len(mounts(setup, "fs0")) == len(started)
        incident = readd[0][0].split("/")[0]
        assert (f"{incident}/remount_guest/1", "succeeded") in [(k, s) for k, s, _ in remounts]
        journal = records(setup / "journal")
        order = [(r["key"], r["status"]) for r in journal if r["type"] == "outcome"]
        readd_done = order.index((readd[0][0], "succeeded"))
        assert order.index((f"{incident}/remount_guest/1", "started")) > readd_done
        adds = [line for line in ch.log_path.read_text().splitlines() if "VmAddFs" in line]
        assert len(adds) == 2  # the test's own add, and the re-add's one
    finally:
        ch.stop()


def configured(api: ChApiClient) -> list[str]:
    return [str(d.get("id")) for d in api.info().get("config", {}).get("fs") or []]


@contextmanager
def fs0_in_the_vm(setup: Path) -> Iterator[tuple[subprocess.Popen[bytes], ChStandIn]]:
    """healer watch on both shares, and the stand-in VMM with fs0 added (and served)."""
    config = with_vmm(setup)
    ch = ChStandIn(setup / "api.sock", setup / "ch-vmm.log").start()
    try:
        with running_watch(config) as healer:
            wait_for(lambda: len(children(healer.pid)) == 2)
            api = ChApiClient(str(setup / "api.sock"))
            api.add_fs(tag="fs0", socket=str(setup / "fs0.sock"), device_id="fs0")
            yield healer, ch
    finally:
        ch.stop()


def test_a_stalled_readd_of_one_share_does_not_hold_up_another_share(setup: Path) -> None:
    with fs0_in_the_vm(setup) as (healer, ch):
        with ch.hold_vmm():  # fs0's re-add now hangs on the VMM's API
            gave_up(setup, "fs0", datetime.now(UTC))
            wait_for(lambda: outcomes(setup, "readd_fs"))
            # Meanwhile fs1's virtiofsd dies: it is respawned and remounted at once.
            (fs1,) = [p for p in children(healer.pid) if "shared-fs1" in cmdline(p)]
            os.kill(fs1, signal.SIGKILL)
            wait_for(lambda: mounts(setup, "fs1"))
            assert not finals(setup, "readd_fs")  # fs0's re-add is still out
        wait_for(lambda: finals(setup, "readd_fs"), 120)
        assert finals(setup, "readd_fs")[0][1] == "succeeded"
        wait_for(lambda: mounts(setup, "fs0"))


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):  # gone, or reaped while read
        return ""


def test_a_guest_reboot_is_served_again_by_a_respawned_virtiofsd(setup: Path) -> None:
    """The reset closes the VMM's connection: virtiofsd exits 0, healer starts the next."""
    with fs0_in_the_vm(setup) as (healer, ch):
        wait_for(lambda: ch.stats.connects == 1)
        for reboot in (1, 2):
            assert ch.guest_reboot()
            wait_for(lambda n=reboot: ch.stats.connects == 1 + n)
            wait_for(lambda n=reboot: len(mounts(setup, "fs0")) == n)
        assert ch.stats.refused == 0
        assert ch.stats.not_found == 0
        assert healer.poll() is None
    exits = [
        r["event"]
        for r in records(setup / "journal")
        if r["type"] == "event"
        and r["event"]["kind"] == "VirtiofsdExited"  # type: ignore[index]
        and r["event"]["share"] == "fs0"  # type: ignore[index]
    ]
    assert [e["fields"]["status"] for e in exits] == [0, 0]  # type: ignore[index]
