"""Several VMs in one healer: named ``[[vmm]]`` and ``[[guest]]`` tables, each share
naming its VM, each VM's log naming its VM.

Two cloud-hypervisor stand-ins (the real one is not packaged; the stand-in follows
its documented API and log), each with one share added without an id, so both VMMs
give their device the same id (``_fs1``). A NEEDS_RESET line in the second VM's log
names only that id: it must re-add the second VM's share through the second VM's API, and touch
nothing of the first. A kill of the first VM's virtiofsd must remount through the
first VM's guest transport only. The real virtiofsd serves both.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import wait_for
from watching import (
    daemon_pid,
    decisions,
    everything_stopped,
    kill_serving_daemon,
    recording_guest,
    start_watch,
)

from healer.config import ConfigError, load_config
from healer.engine import Action
from healer.sim import ChStandIn
from healer.supervise import DaemonInfo
from healer.vmm import ChApiClient
from healer.vmm.chformat import log_line, worker_failed

ROOT = Path(__file__).resolve().parent.parent
VMS = {"web": "web0", "db": "db0"}  # VM -> its share


@dataclass
class Vm:
    name: str
    share: str
    root: Path
    vmm: ChStandIn

    @property
    def api(self) -> Path:
        return self.root / "api.sock"

    @property
    def log(self) -> Path:
        return self.root / "ch.log"

    def remounts(self) -> int:
        log = self.root / "guest.log"
        return log.read_text().count("mount -t virtiofs") if log.exists() else 0


def write_config(root: Path) -> Path:
    text = (
        f'[healer]\njournal = "{root / "journal"}"\nrules = "{ROOT / "rules"}"\nmetrics = "off"\n\n'
    )
    for vm, share in VMS.items():
        home = root / vm
        home.mkdir()
        (home / "shared").mkdir()
        guest = recording_guest(home)
        text += (
            f'[[share]]\nname = "{share}"\nvm = "{vm}"\nsocket = "{home / "fs.sock"}"\n'
            f'shared_dir = "{home / "shared"}"\nmount_point = "/mnt/{share}"\n\n'
            f'[[vmm]]\nname = "{vm}"\napi_socket = "{home / "api.sock"}"\n\n'
            f'[[guest]]\nvm = "{vm}"\nremount = ["{sys.executable}", "{guest}"]\n'
            f'mount_point = "/mnt/{share}"\n\n'
            f'[[source]]\npath = "{home / "ch.log"}"\nname = "ch-{vm}"\nvm = "{vm}"\n\n'
        )
    config = root / "healer.toml"
    config.write_text(text)
    return config


@pytest.fixture
def two_vms(virtiofsd: DaemonInfo) -> Iterator[tuple[Path, dict[str, Vm]]]:
    with tempfile.TemporaryDirectory(prefix="vms", dir="/tmp") as name:
        root = Path(name)
        config = write_config(root)
        with everything_stopped(config):
            brain = start_watch(config, root / "healer.log")
            vms = {
                vm: Vm(
                    vm, share, root / vm, ChStandIn(root / vm / "api.sock", root / vm / "ch.log")
                )
                for vm, share in VMS.items()
            }
            try:
                for vm in vms.values():
                    connect(config, vm)
                time.sleep(0.7)  # the sessions outlast stale_session: healthy shares
                yield config, vms
            finally:
                for vm in vms.values():
                    vm.vmm.stop()
                brain.send_signal(signal.SIGTERM)
                try:
                    brain.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    brain.kill()
                    brain.wait(timeout=30)


def connect(config: Path, vm: Vm) -> None:
    """The VM's VMM up, its share's device added without an id (CH names it), served."""
    vm.vmm.start()
    wait_for(lambda: daemon_pid(config, vm.share) is not None)
    fs = {"tag": vm.share, "socket": str(vm.root / "fs.sock")}
    ChApiClient(str(vm.api)).request("PUT", "vm.add-fs", fs)
    wait_for(lambda: vm.vmm.stats.connects >= 1)


def device_ids(vm: Vm) -> list[str]:
    return [fs["id"] for fs in ChApiClient(str(vm.api)).info()["config"]["fs"]]


@pytest.mark.parametrize("reset", ["web", "db"])
def test_a_device_id_is_looked_up_in_its_own_vm(
    two_vms: tuple[Path, dict[str, Vm]], reset: str
) -> None:
    """Either VM's log: its line re-adds its own share (the learnt ids of both VMs in
    one table would send one of the two to the wrong VM)."""
    config, vms = two_vms
    (target,) = (vm for name, vm in vms.items() if name == reset)
    (other,) = (vm for name, vm in vms.items() if name != reset)
    (device,) = device_ids(target)
    assert device_ids(other) == [device]  # the same id in both VMs (_fs1: CH's counter)
    journal = config.parent / "journal"
    other_connects = other.vmm.stats.connects
    with target.log.open("a") as log:  # this VM's VMM: its device needs a reset
        _, where, text = worker_failed(device, 53)
        log.write(log_line(53, 99.0, level="WARN", thread=device, where=where, msg=text))
    wait_for(lambda: any(d.action == Action.READD for d in decisions(journal)))
    wait_for(lambda: target.vmm.stats.connects >= 2)  # re-added through its own API
    readds = [d for d in decisions(journal) if d.action == Action.READD]
    assert {d.share for d in readds} == {target.share}
    time.sleep(1.0)  # anything more it would do, it has done
    assert other.vmm.stats.connects == other_connects  # the other VM's device untouched
    assert other.remounts() == 0


def test_a_kill_heals_through_its_own_vms_guest(two_vms: tuple[Path, dict[str, Vm]]) -> None:
    config, vms = two_vms
    web, db = vms["web"], vms["db"]
    kill_serving_daemon(config, "web0")
    wait_for(lambda: web.remounts() >= 1, 30)
    time.sleep(1.0)
    assert (web.remounts(), db.remounts()) == (1, 0)
    respawns = [
        d
        for d in decisions(config.parent / "journal")
        if d.action == Action.RESPAWN and d.suppressed is None and d.note is None
    ]
    assert {d.share for d in respawns} == {"web0"}


BASE = '[healer]\njournal = "/var/lib/healer"\n'


def share(name: str, vm: str | None = None) -> str:
    named = f'vm = "{vm}"\n' if vm else ""
    return (
        f'\n[[share]]\nname = "{name}"\n{named}socket = "/run/{name}.sock"\nshared_dir = "/srv"\n'
    )


def test_vms_are_named_and_each_share_names_its_own(tmp_path: Path) -> None:
    path = tmp_path / "healer.toml"
    path.write_text(
        BASE
        + share("a", "web")
        + share("b", "db")
        + '\n[[vmm]]\nname = "web"\napi_socket = "/run/web.sock"\n'
        + '\n[[vmm]]\nname = "db"\nkind = "qemu"\nqmp_socket = "/run/db-qmp.sock"\n'
        + '\n[[guest]]\nvm = "db"\nremount = ["ssh", "db"]\nmount_point = "/mnt"\n'
    )
    config = load_config(path)
    assert [(s.name, s.vm) for s in config.shares] == [("a", "web"), ("b", "db")]
    assert [(v.name, v.kind) for v in config.vmms] == [("web", "cloud-hypervisor"), ("db", "qemu")]
    assert [g.vm for g in config.guests] == ["db"]
    assert config.vmm is None  # several: no single one


def test_one_vmm_table_is_every_shares_vm(tmp_path: Path) -> None:
    path = tmp_path / "healer.toml"
    path.write_text(BASE + share("a") + '\n[vmm]\nname = "web"\napi_socket = "/run/w.sock"\n')
    config = load_config(path)
    assert [s.vm for s in config.shares] == ["web"]
    assert config.vmm is not None
    assert config.vmm.name == "web"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (
            share("a")
            + '\n[[vmm]]\nname = "web"\napi_socket = "/run/w.sock"\n'
            + '\n[[vmm]]\nname = "db"\napi_socket = "/run/d.sock"\n',
            4,
            "share 'a' does not say which VM it belongs to",
        ),
        (
            share("a", "mail") + '\n[vmm]\nname = "web"\napi_socket = "/run/w.sock"\n',
            6,
            "vm 'mail' is not a configured VM",
        ),
        (
            share("a", "web")
            + '\n[[vmm]]\nname = "web"\napi_socket = "/run/w.sock"\n'
            + '\n[[vmm]]\nname = "web"\napi_socket = "/run/x.sock"\n',
            15,
            "VM 'web' has a [vmm] already",
        ),
        (
            share("a") + '\n[[vmm]]\napi_socket = "/run/w.sock"\n',
            9,
            "each [[vmm]] names its VM",
        ),
    ],
)
def test_a_vm_mistake_is_located(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = tmp_path / "healer.toml"
    path.write_text(BASE + text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    found = [(p.line, p.message) for p in caught.value.problems]
    assert (line, message) in found, found
