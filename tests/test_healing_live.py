"""One fault, one healing, live: the real virtiofsd, a VMM that logs like cloud-hypervisor
(uptime only: ``cloud-hypervisor: 12.345678s: <vmm> ...``), and faults as they happen.

The VMM is healer's stand-in (healer/sim/cloud_hypervisor.py): a real vhost-user front
end that reconnects after a disconnect and logs CH v53's lines, tailed by healer; the
guest is a recording transport. Each test counts what the journal says healer decided
and did; expectations are per fault (one respawn, one remount), never a time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from conftest import wait_for
from rulepatch import edit, shipped_rules, write_rules
from watching import (
    daemon_pid,
    decisions,
    everything_stopped,
    journal_records,
    recording_guest,
    start_watch,
)

from healer.engine import Action, Decision, Phase
from healer.journal import DecisionRecord, EventRecord, Record, TransitionRecord
from healer.sim import ChStandIn
from healer.supervise import DaemonInfo
from healer.vmm import ChApiClient
from healer.vmm.chformat import log_line, worker_failed

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Rig:
    """healer watch on the README-like configuration, the VMM, and the recorded guest."""

    root: Path
    config: Path
    brain: subprocess.Popen[bytes]
    vmm: ChStandIn

    @property
    def journal(self) -> Path:
        return self.root / "journal"

    def records(self) -> list[Record]:
        return journal_records(self.journal)

    def daemon(self, share: str = "fs0") -> int | None:
        """The share's running virtiofsd, as the holder records it."""
        return daemon_pid(self.config, share)

    def remounts(self) -> int:
        log = self.root / "guest.log"
        return log.read_text().count("mount -t virtiofs") if log.exists() else 0


def quick_rules(target: Path) -> Path:
    """The shipped rules with the backoff from 0.1 s, started over after one healthy
    second, and storms counted from 50: rounds of kills a second apart are then each a
    first death, not a storm (the attribution is what these tests look at)."""
    rules = shipped_rules()
    rules = replace(rules, policy=replace(rules.policy, backoff_initial_s=0.1, healthy_after_s=1.0))
    for storm in ("restart-storm", "daemon-storm"):
        rules = edit(rules, storm, lambda rule: replace(rule, count=50))
    return write_rules(rules, target)


def write_config(
    root: Path, shares: tuple[str, ...], extra_share: str = "", *, rules: Path = ROOT / "rules"
) -> Path:
    guest = recording_guest(root)
    text = f'[healer]\njournal = "{root / "journal"}"\nrules = "{rules}"\nmetrics = "off"\n\n'
    for name in shares:
        (root / f"shared-{name}").mkdir(exist_ok=True)
        text += (
            f'[[share]]\nname = "{name}"\nsocket = "{root / f"{name}.sock"}"\n'
            f'shared_dir = "{root / f"shared-{name}"}"\nmount_point = "/mnt/{name}"\n'
            f"{extra_share}\n"
        )
    text += (
        f'[vmm]\napi_socket = "{root / "api.sock"}"\n\n'
        f'[guest]\nremount = ["{sys.executable}", "{guest}"]\nmount_point = "/mnt/fs0"\n\n'
        f'[[source]]\npath = "{root / "ch.log"}"\nname = "cloud-hypervisor"\n'
    )
    config = root / "healer.toml"
    config.write_text(text)
    return config


@contextlib.contextmanager
def rig(
    shares: tuple[str, ...] = ("fs0",),
    *,
    named: bool = True,
    extra_share: str = "",
    devices: bool = True,
    quick: bool = False,
) -> Iterator[Rig]:
    """Everything up: healer watching, the VMM's devices added and connected."""
    with tempfile.TemporaryDirectory(prefix="heal", dir="/tmp") as name:
        root = Path(name)
        rules = quick_rules(root / "rules") if quick else ROOT / "rules"
        config = write_config(root, shares, extra_share, rules=rules)
        with everything_stopped(config):
            brain = start_watch(config, root / "healer.log")
            vmm = ChStandIn(root / "api.sock", root / "ch.log").start()
            running = Rig(root, config, brain, vmm)
            try:
                if devices:
                    for share in shares:
                        wait_for(has_daemon(running, share))
                    api = ChApiClient(str(root / "api.sock"))
                    for share in shares:
                        fs = {"tag": share, "socket": str(root / f"{share}.sock")}
                        if named:
                            fs["id"] = share
                        api.request("PUT", "vm.add-fs", fs)  # unnamed: CH calls it _fs<N>
                    wait_for(lambda: vmm.stats.connects >= len(shares))
                    time.sleep(0.7)  # the sessions outlast stale_session: healthy shares
                yield running
            finally:
                vmm.stop()
                # the brain running now (a test may restart it)
                running.brain.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    running.brain.wait(timeout=30)


def has_daemon(running: Rig, share: str) -> Callable[[], bool]:
    return lambda: running.daemon(share) is not None


def more_connects(running: Rig, than: int) -> Callable[[], bool]:
    return lambda: running.vmm.stats.connects > than


def healed(running: Rig, deaths: int) -> Callable[[], bool]:
    return lambda: len(healings(running.records(), Action.RESPAWN)) >= deaths


def healings(records: list[Record], action: Action, share: str = "fs0") -> list[DecisionRecord]:
    """Decisions of ``action`` that heal a fault (not a drained dead connection)."""
    return [
        r
        for r in records
        if isinstance(r, DecisionRecord)
        and r.decision.action == action
        and r.decision.share == share
        and r.decision.suppressed is None
        and r.decision.note is None
    ]


def of_kind(records: list[Record], kind: str) -> list[EventRecord]:
    """The journaled events of one kind (by name), in journal order."""
    return [r for r in records if isinstance(r, EventRecord) and r.event.kind == kind]


def drains(records: list[Record]) -> list[DecisionRecord]:
    return [r for r in records if isinstance(r, DecisionRecord) and r.decision.note is not None]


def recoveries(records: list[Record], share: str = "fs0") -> list[float]:
    """Seconds each incident of ``share`` lasted, failing to healthy, in event time."""
    opened: dict[str, float] = {}
    lasted = []
    for r in records:
        if isinstance(r, TransitionRecord) and r.transition.share == share:
            t = r.transition
            if t.before == Phase.HEALTHY:
                opened[t.incident] = t.time
            elif t.after == Phase.HEALTHY and t.incident in opened:
                lasted.append(t.time - opened[t.incident])
    return lasted


def kill(running: Rig, share: str = "fs0") -> int:
    pid = running.daemon(share)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    return pid


def served_again(running: Rig, connects: int, incidents: int, share: str = "fs0") -> None:
    """The VMM reconnected and the incident closed (the recovery lasted stale_session)."""
    wait_for(lambda: running.vmm.stats.connects > connects)
    wait_for(lambda: len(recoveries(running.records(), share)) >= incidents)


def readds_after_a_worker_failed(running: Rig, device: str) -> list[Decision]:
    """The VMM logs that ``device``'s worker failed (v53's NEEDS_RESET line, which names
    only the device id); once healer has decided to re-add a device, those decisions."""
    with (running.root / "ch.log").open("a") as log:
        _, where, text = worker_failed(device, 53)
        log.write(log_line(53, 99.0, level="WARN", thread=device, where=where, msg=text))

    def readds() -> list[Decision]:
        return [d for d in decisions(running.journal) if d.action == Action.READD]

    wait_for(readds)
    return readds()


def test_one_kill_is_one_respawn_one_remount_and_a_true_recovery_time(
    virtiofsd: DaemonInfo,
) -> None:
    with rig() as running:
        connects = running.vmm.stats.connects
        kill(running)
        served_again(running, connects, 1)
        wait_for(lambda: running.remounts() >= 1)
        time.sleep(1.0)  # every report of the death has arrived (the VMM's line too)
        records = running.records()
        assert len(healings(records, Action.RESPAWN)) == 1
        assert len(healings(records, Action.REMOUNT)) == 1
        assert running.remounts() == 1
        (lasted,) = recoveries(records)
        assert 0 < lasted < 1.0  # the outage as the events date it (it is milliseconds)
        kinds = {r.event.kind for r in records if isinstance(r, EventRecord)}
        assert "BackendDisconnected" in kinds  # the VMM's uptime-only line was read
        assert all(r.event.time is not None for r in records if isinstance(r, EventRecord))


def test_two_kills_in_a_row_soon_after_the_vmm_connected_are_two_healings(
    virtiofsd: DaemonInfo,
) -> None:
    """The Rust race: kill 20 ms after the VMM connected, again 1.3 s later; both are
    healed, every time (five rounds)."""
    rounds = 5
    with rig(quick=True) as running:
        for n in range(rounds):
            connects = running.vmm.stats.connects
            kill(running)
            wait_for(more_connects(running, connects))
            time.sleep(0.02)
            connects = running.vmm.stats.connects
            kill(running)
            wait_for(more_connects(running, connects))
            wait_for(healed(running, 2 * (n + 1)))
            time.sleep(1.3)  # and one healthy second: the next round is a first death
        time.sleep(1.0)
        records = running.records()
        assert len(healings(records, Action.RESPAWN)) == 2 * rounds
        assert len(healings(records, Action.REMOUNT)) == 2 * rounds
        assert not [
            r
            for r in records
            if isinstance(r, DecisionRecord) and r.decision.action == Action.OPEN_CIRCUIT
        ]


def test_dead_probes_in_the_backlog_are_no_client_no_restart_and_no_circuit(
    virtiofsd: DaemonInfo,
) -> None:
    with rig() as running:
        sock = running.root / "fs0.sock"
        for _ in range(3):  # queued behind the VMM's session, closed at once
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.connect(str(sock))
            probe.close()
        # a VMM process that dies while it waits in the backlog
        waiting = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import socket, sys, time; s = socket.socket(socket.AF_UNIX); "
                "s.connect(sys.argv[1]); print('in', flush=True); time.sleep(60)",
                str(sock),
            ],
            stdout=subprocess.PIPE,
        )
        with waiting:  # closes its pipe
            assert waiting.stdout is not None
            assert waiting.stdout.readline().strip() == b"in"
            waiting.kill()
        connects = running.vmm.stats.connects
        kill(running)
        served_again(running, connects, 1)
        time.sleep(1.0)
        records = running.records()
        assert len(healings(records, Action.RESPAWN)) == 1
        assert drains(records) == []  # the dead ones were dropped before a daemon saw them
        assert "4 dead connection(s) dropped" in (running.root / "healer.log").read_text()
        starts = of_kind(records, "VirtiofsdStarted")
        assert len(starts) == 2  # the first daemon and its one successor


def test_a_device_named_only_by_its_id_reaches_its_share(virtiofsd: DaemonInfo) -> None:
    """Two shares, devices named by the VMM (``_fs0``, ``_fs1``): a NEEDS_RESET line that
    names only the device id re-adds that share's device, not a share 'default'."""
    with rig(("fs0", "fs1"), named=False) as running:
        info = ChApiClient(str(running.root / "api.sock")).info()
        ids = {fs["tag"]: fs["id"] for fs in info["config"]["fs"]}
        assert sorted(ids) == ["fs0", "fs1"]
        assert all(i.startswith("_fs") for i in ids.values())  # named by the VMM
        device = ids["fs1"]
        (readd,) = readds_after_a_worker_failed(running, device)
        assert readd.share == "fs1"


def test_a_restarted_healer_learns_the_vmms_device_ids_from_vm_info(
    virtiofsd: DaemonInfo,
) -> None:
    """The ids the VMM gave its devices (``_fs0``) were learnt from its creation lines,
    which a restarted healer does not read again (its log positions are journaled): it
    asks ``vm.info`` at start, so a line naming only a device id still reaches its
    share after the restart."""
    with rig(("fs0", "fs1"), named=False) as running:
        info = ChApiClient(str(running.root / "api.sock")).info()
        device = {fs["tag"]: fs["id"] for fs in info["config"]["fs"]}["fs1"]
        assert device.startswith("_fs")
        running.brain.kill()
        running.brain.wait(timeout=30)
        healer_log = running.root / "healer.log"
        running.brain = start_watch(running.config, healer_log)
        wait_for(lambda: healer_log.read_text().count("INFO started healer ") == 2)
        assert "the VMM lists 2 fs device(s), 2 of them this configuration's" in (
            healer_log.read_text()
        )
        (readd,) = readds_after_a_worker_failed(running, device)
        assert readd.share == "fs1"


def test_a_daemon_that_floods_its_stderr_as_it_dies_has_its_exit_seen(
    short_flood: Path,
) -> None:
    """A fake virtiofsd that writes 200,000 lines and exits, again and again: every exit
    is journaled (none lost behind the lines), and every line is read."""
    extra = f'virtiofsd = ["{sys.executable}", "{short_flood}", "--fd={{fd}}"]'
    with rig(extra_share=extra, devices=False) as running:
        wait_for(lambda: len(of_kind(running.records(), "VirtiofsdExited")) >= 3, 60)
        records = running.records()
        started = of_kind(records, "VirtiofsdStarted")
        exited = of_kind(records, "VirtiofsdExited")
        assert len(exited) >= len(started) - 1  # each daemon but the one running now


@pytest.fixture
def short_flood() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="flood", dir="/tmp") as name:
        script = Path(name) / "flood.py"
        script.write_text(
            "import sys, time\n"
            "out = sys.stderr\n"
            "out.write('virtio_session_mount: Waiting for vhost-user socket connection...\\n')\n"
            "for n in range(200_000):\n"
            "    out.write(f'noise line {n} of a daemon that talks too much\\n')\n"
            "out.flush()\n"
            "sys.exit(1)\n"
        )
        yield script
