"""The operator's field check: the README's own configuration, a real virtiofsd, a VMM
connected, and the faults of real life, counted.

The configuration is the README's example (its `<!-- config-example -->` block) with
its paths moved into a scratch directory, the shipped rules, metrics on a free
loopback port and the guest's `ssh` prefix replaced by a recording transport. The VMM
is the cloud-hypervisor stand-in (healer/sim: a real vhost-user front end with CH's
reconnect loop, its API on the configured `api_socket`, its log at the configured
`[[source]]`), given the share's device as vm.sh would (`vm.add-fs`, no id: CH names
it). Faults, in order, each counted on its own:

- ``virtiofsd killed``: SIGKILL of the daemon serving the VMM;
- ``healer killed``: SIGKILL of `healer watch`, started again (a crash, an OOM kill);
- ``healer restarted``: SIGTERM, started again (`systemctl restart`, an upgrade);
- ``SIGHUP``: a reload;
- ``second healer``: another `healer watch` on the same configuration;
- ``dead connection, then a kill``: a client that connected and closed waits in the
  socket's backlog behind the VMM's session, then the daemon is killed.

Per fault: healings (respawn decisions that are not drains of dead connections),
guest remounts, the VMM's session drops, its refused connects, and whether the VMM is
served again. Used by tests/test_field.py (expectations written there) and
bench/field_check.py (a table per daemon). Every wait is bounded; nothing times.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from conftest import wait_for
from test_healing_live import healings
from watching import daemon_pid, journal_records, recording_guest, start_watch, stop_everything

from healer.engine import Action
from healer.journal import Record
from healer.sim import ChStandIn
from healer.supervise import has_client
from healer.vmm import ChApiClient

__all__ = ["FAULTS", "Count", "field_check"]

ROOT = Path(__file__).resolve().parent.parent
SHARE = "rootextra_test"
FAULTS = (
    "virtiofsd killed",
    "healer killed",
    "healer restarted",
    "SIGHUP",
    "second healer",
    "dead connection, then a kill",
)
SETTLE_S = 1.0  # after a fault is healed: every report of it has arrived


@dataclass(frozen=True, slots=True)
class Count:
    """What one fault caused."""

    fault: str
    healings: int
    remounts: int
    session_drops: int
    refused: int
    served: bool  # the VMM had a session once the fault was over
    note: str = ""


def readme_config(root: Path) -> str:
    """The README's example configuration, its paths under ``root``."""
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- config-example -->\n```toml\n(.*?)```", text, re.S)
    assert found is not None, "docs/configuration.md has no config-example block"
    guest = recording_guest(root)
    config = found.group(1)
    for old, new in (
        ('rules = "/etc/healer/rules"', f'rules = "{ROOT / "rules"}"'),
        ('metrics = "127.0.0.1:9464"', 'metrics = "127.0.0.1:0"'),
        ('remount = ["ssh", "root@board", "--"]', f'remount = ["{sys.executable}", "{guest}"]'),
        ("/work/run", str(root / "run")),
        ("/work/rootfs_test", str(root / "rootfs_test")),
    ):
        assert old in config, f"the README's example no longer has {old!r}"
        config = config.replace(old, new)
    return config


class Field:
    """healer watch on the README's configuration, and the VMM connected to its share."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "run").mkdir()
        (root / "rootfs_test").mkdir()
        self.config = root / "healer.toml"
        self.config.write_text(readme_config(root))
        self.socket = root / "run" / f"{SHARE}.sock"
        self.journal = root / "run" / "healer"
        self.log = root / "healer.log"
        self.brain = self.watch()
        self.vmm = ChStandIn(root / "run" / "clh.sock", root / "run" / "boot.log").start()

    def watch(self) -> subprocess.Popen[bytes]:
        return start_watch(self.config, self.log)

    def watching(self) -> int:
        return self.log.read_text(errors="replace").count("INFO started healer ")

    def records(self) -> list[Record]:
        return journal_records(self.journal)

    def remounts(self) -> int:
        log = self.root / "guest.log"
        return log.read_text().count("mount -t virtiofs") if log.exists() else 0

    def daemon(self) -> int | None:
        return daemon_pid(self.config, SHARE)

    def connect_vmm(self) -> None:
        wait_for(lambda: self.daemon() is not None)
        ChApiClient(str(self.root / "run" / "clh.sock")).request(
            "PUT", "vm.add-fs", {"tag": SHARE, "socket": str(self.socket)}
        )
        wait_for(lambda: self.vmm.stats.connects >= 1)
        time.sleep(SETTLE_S)  # the session outlasts stale_session: a healthy share

    def restart(self, how: signal.Signals) -> None:
        seen = self.watching()
        self.brain.send_signal(how)
        self.brain.wait(timeout=30)
        self.brain = self.watch()
        wait_for(lambda: self.watching() > seen, 30)

    def kill_daemon(self) -> None:
        pid = self.daemon()
        assert pid is not None
        connects = self.vmm.stats.connects
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: self.vmm.stats.connects > connects, 30)
        wait_for(lambda: self.daemon() not in (None, pid), 30)

    def close(self) -> None:
        self.vmm.stop()
        stop_everything(self.config)
        self.brain.wait(timeout=30)


@contextmanager
def field() -> Iterator[Field]:
    with tempfile.TemporaryDirectory(prefix="field", dir="/tmp") as name:
        running = Field(Path(name))
        try:
            running.connect_vmm()
            yield running
        finally:
            running.close()


def _inject(running: Field, fault: str) -> str:
    """Do ``fault``; a note on what was seen, if any."""
    if fault == "virtiofsd killed":
        running.kill_daemon()
    elif fault == "healer killed":
        running.restart(signal.SIGKILL)
    elif fault == "healer restarted":
        running.restart(signal.SIGTERM)
    elif fault == "SIGHUP":
        seen = running.log.read_text().count("reloaded ")
        running.brain.send_signal(signal.SIGHUP)
        wait_for(lambda: running.log.read_text().count("reloaded ") > seen, 30)
    elif fault == "second healer":
        second = subprocess.run(
            [sys.executable, "-m", "healer", "watch", "--config", str(running.config)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return f"exit {second.returncode}"
    elif fault == "dead connection, then a kill":
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(running.socket))
        probe.close()
        dropped = running.log.read_text().count("dead connection(s) dropped")
        running.kill_daemon()
        if running.log.read_text().count("dead connection(s) dropped") > dropped:
            return "dropped from the backlog"
    else:
        raise ValueError(fault)
    return ""


def field_check(faults: tuple[str, ...] = FAULTS) -> list[Count]:
    """Run every fault on one field (the daemon is HEALER_VIRTIOFSD's); one Count each."""
    counts = []
    with field() as running:
        for fault in faults:
            before = running.records(), running.remounts(), running.vmm.stats
            note = _inject(running, fault)
            time.sleep(SETTLE_S)
            wait_for(lambda: running.remounts() >= len(healings_of(running.records())), 30)
            after = running.records(), running.remounts(), running.vmm.stats
            counts.append(
                Count(
                    fault,
                    len(healings_of(after[0])) - len(healings_of(before[0])),
                    after[1] - before[1],
                    after[2].disconnects - before[2].disconnects,
                    (after[2].refused + after[2].not_found)
                    - (before[2].refused + before[2].not_found),
                    has_client(str(running.socket)),  # the VMM has a session now
                    note,
                )
            )
        if "Traceback" in running.log.read_text(errors="replace"):
            counts.append(Count("a traceback in healer's log", 0, 0, 0, 0, False))
    return counts


def healings_of(records: list[Record]) -> list[object]:
    return list(healings(records, Action.RESPAWN, SHARE))
