"""The shipped units (deploy/healer-holder.service, deploy/healer.service) under a real
systemd, with the real virtiofsd and a VMM's vhost-user session from the host.

systemd is PID 1 of a container (tests/systemd_rig.py). The units are used as shipped,
only with the checkout's healer for /usr/local/bin/healer, the test's configuration, and
a short WatchdogSec so the pings are seen within seconds. A session that survives is
one front end connection answering after the event; refused connects are counted by a
reconnect loop while it happens. Select with ``-m systemd``; waits are bounded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Reconnector
from systemd_rig import CHECKOUT, Container, booted

from healer.sim import VhostUserFrontend
from healer.supervise import DaemonInfo

pytestmark = pytest.mark.systemd

HEALER = str(CHECKOUT / ".venv" / "bin" / "healer")
CONFIG = "/etc/healer/healer.toml"
SOCKET = "/run/vfs/fs0.sock"
LIMIT_S = 60.0


@pytest.fixture
def container(tmp_path: Path) -> Iterator[Container]:
    with booted(tmp_path / "root") as running:
        yield running


def install(container: Container, daemon: DaemonInfo) -> None:
    """The shipped units and a configuration for one share, inside the container."""
    etc = container.root / "etc" / "healer"
    etc.mkdir(parents=True)
    shared = container.root / "var" / "lib" / "shared"
    shared.mkdir(parents=True)
    (shared / "hello.txt").write_text("hello\n")
    argv = ", ".join(f'"{a}"' for a in daemon.argv(shared_dir="/var/lib/shared"))
    (etc / "healer.toml").write_text(
        '[healer]\njournal = "/var/lib/healer/journal"\nmetrics = "off"\n\n'
        f'[[share]]\nname = "fs0"\nsocket = "{SOCKET}"\nshared_dir = "/var/lib/shared"\n'
        f"virtiofsd = [{argv.replace('/var/lib/shared', '{shared_dir}')}]\n"
    )
    container.run("mkdir", "-p", "/run/vfs")
    for name in ("healer-holder.service", "healer.service"):
        text = (CHECKOUT / "deploy" / name).read_text()
        text = text.replace("/usr/local/bin/healer", HEALER)
        text = text.replace("WatchdogSec=30", "WatchdogSec=3")
        container.write_unit(name, text, reload=False)
    container.daemon_reload()


def main_pid(container: Container, unit: str) -> str:
    return container.prop(unit, "MainPID")


def daemons(container: Container) -> list[str]:
    """The virtiofsd processes of the holder's unit (``systemctl status`` lists them)."""
    status = container.status("healer-holder.service")
    return sorted(set(re.findall(r"[├└]─\s*(\d+) \S*(?:virtiofsd|ld-linux)", status)))


def kill_a_daemon(container: Container) -> str:
    """SIGKILL the holder's virtiofsd; its pid. (The C daemon ends and is respawned
    when a front end leaves, so the pid listed may be gone by the kill: look again.)"""
    listed: list[list[str]] = []

    def found() -> bool:
        listed.append(daemons(container))
        return bool(listed[-1])

    for _ in range(10):
        container.wait(found, "a virtiofsd listed")
        pid = listed[-1][0]
        if container.run("kill", "-KILL", pid, check=False).returncode == 0:
            return pid
    raise AssertionError("no virtiofsd stayed long enough to be killed")


def journald_lines(container: Container, unit: str) -> dict[str, str]:
    """What the unit's processes wrote, as journald stored it: message -> PRIORITY."""
    out = container.run("journalctl", "--no-pager", "-o", "json", "-u", unit, "_TRANSPORT=stdout")
    lines = {}
    for text in out.stdout.splitlines():
        entry = json.loads(text)
        if isinstance(entry.get("MESSAGE"), str):
            lines[entry["MESSAGE"]] = entry.get("PRIORITY", "")
    return lines


def test_restart_kill_reload_and_stop_under_systemd(
    container: Container, virtiofsd: DaemonInfo
) -> None:
    install(container, virtiofsd)
    container.start("healer.service")  # pulls the holder in; returns once READY=1
    for unit in ("healer-holder.service", "healer.service"):
        assert container.prop(unit, "ActiveState") == "active", container.status(unit)
    container.wait(
        lambda: "1 share(s): 1 served" in container.prop("healer.service", "StatusText"),
        "healer's status line",
        LIMIT_S,
    )
    assert container.prop("healer-holder.service", "NFileDescriptorStore") == "1"
    sock = container.host_path(SOCKET)
    vmm = VhostUserFrontend(str(sock), timeout_s=LIMIT_S)
    assert vmm.get_features() > 0
    daemon = daemons(container)
    assert daemon

    with Reconnector(sock) as probes:
        # 1. systemctl restart healer: the brain goes and comes; the session stays
        before = main_pid(container, "healer.service")
        container.restart("healer.service")
        assert main_pid(container, "healer.service") != before
        assert vmm.get_features() > 0
        # 2. systemctl kill -s KILL healer: every process of healer.service, then Restart=
        before = main_pid(container, "healer.service")
        container.kill("healer.service", "KILL")
        container.wait(
            lambda: (
                main_pid(container, "healer.service") not in ("0", before)
                and container.prop("healer.service", "ActiveState") == "active"
            ),
            "healer restarted by systemd after SIGKILL",
            LIMIT_S,
        )
        assert vmm.get_features() > 0
        # 3. systemctl reload healer: SIGHUP, validated, READY again
        container.reload("healer.service")
        container.wait_journal("healer.service", "reloaded /etc/healer/healer.toml")
        assert vmm.get_features() > 0
    assert probes.tries > 0
    assert probes.refused == 0
    assert daemons(container) == daemon  # the very same virtiofsd throughout

    # 4. the watchdog: healer pings from its loop, so WatchdogSec=3 restarts nothing
    pid = main_pid(container, "healer.service")
    container.wait(
        lambda: container.prop("healer.service", "WatchdogTimestampMonotonic") != "0",
        "a watchdog ping",
        LIMIT_S,
    )
    stamp = container.prop("healer.service", "WatchdogTimestampMonotonic")
    container.wait(
        lambda: container.prop("healer.service", "WatchdogTimestampMonotonic") != stamp,
        "the next watchdog ping",
        LIMIT_S,
    )
    assert main_pid(container, "healer.service") == pid
    vmm.close()

    # 5. a virtiofsd killed: healer's lines in journald carry their priority, no stamp
    killed = kill_a_daemon(container)
    container.wait_journal("healer.service", "respawn_virtiofsd succeeded", LIMIT_S)
    priorities = journald_lines(container, "healer.service")
    started = [m for m in priorities if m.startswith("started healer ")]
    assert started, priorities
    assert {priorities[m] for m in started} == {"6"}
    exited = [
        m for m in priorities if re.fullmatch(rf"share fs0: virtiofsd {killed} .*exited.*", m)
    ]
    assert [priorities[m] for m in exited] == ["4"], priorities
    decided = [m for m in priorities if m.startswith("share fs0: decided respawn_virtiofsd")]
    assert decided, priorities  # (the C daemon also ends when our front end leaves)
    assert {priorities[m] for m in decided} == {"6"}
    for message in priorities:  # journald has the time and pid: the line carries neither
        assert not re.match(r"<\d>|\d{4}-\d\d-\d\dT|healer\[", message), message
    held = journald_lines(container, "healer-holder.service")
    assert any(m.startswith("started virtiofsd") and p == "6" for m, p in held.items()), held

    # 6. systemctl stop healer-holder: everything ends (healer.service with it)
    container.systemctl("stop", "healer-holder.service")
    for unit in ("healer-holder.service", "healer.service"):
        assert container.prop(unit, "ActiveState") == "inactive"
    assert not sock.exists()
    journal = container.journal("healer-holder.service")
    assert "stopping every share" in journal
    assert re.search(r"virtiofsd \d+ of fs0 .* ended", journal) is None or "released fs0" in journal


def test_the_shipped_units_are_more_confined_than_before(container: Container) -> None:
    """``systemd-analyze security``: the exposure of healer.service, and of the old unit
    (one process, Type=simple, no confinement) for comparison."""
    old = (CHECKOUT / "tests" / "fixtures" / "healer.service.before").read_text()
    container.write_unit("healer-before.service", old, reload=False)
    container.write_unit(
        "healer.service",
        (CHECKOUT / "deploy" / "healer.service").read_text(),
        reload=False,
    )
    container.daemon_reload()

    def exposure(unit: str) -> float:
        out = container.run("systemd-analyze", "security", "--no-pager", unit, check=False)
        found = re.search(r"Overall exposure level for \S+: (\d+\.\d)", out.stdout)
        assert found, out.stdout + out.stderr
        return float(found.group(1))

    before, after = exposure("healer-before.service"), exposure("healer.service")
    print(f"systemd-analyze security: healer.service {before} before, {after} now")
    assert after < before


def test_one_healer_per_vm_from_the_templates(container: Container, virtiofsd: DaemonInfo) -> None:
    """deploy/healer@.service and healer-holder@.service: two VMs, two instances, each
    with its own configuration, journal and sockets; stopping one VM's holder leaves
    the other VM's share served."""
    argv = ", ".join(f'"{a}"' for a in virtiofsd.argv(shared_dir="/var/lib/shared"))
    shared = container.root / "var" / "lib" / "shared"
    shared.mkdir(parents=True)
    etc = container.root / "etc" / "healer"
    etc.mkdir(parents=True)
    container.run("mkdir", "-p", "/run/vfs")
    for vm in ("web", "db"):
        (etc / f"{vm}.toml").write_text(
            f'[healer]\njournal = "/var/lib/healer/{vm}"\nmetrics = "off"\n\n'
            f'[[share]]\nname = "{vm}0"\nsocket = "/run/vfs/{vm}.sock"\n'
            'shared_dir = "/var/lib/shared"\n'
            f"virtiofsd = [{argv.replace('/var/lib/shared', '{shared_dir}')}]\n"
        )
    for name in ("healer-holder@.service", "healer@.service"):
        text = (CHECKOUT / "deploy" / name).read_text().replace("/usr/local/bin/healer", HEALER)
        container.write_unit(name, text, reload=False)
    container.daemon_reload()
    for vm in ("web", "db"):
        container.start(f"healer@{vm}.service")
    for vm in ("web", "db"):
        for unit in (f"healer-holder@{vm}.service", f"healer@{vm}.service"):
            assert container.prop(unit, "ActiveState") == "active", container.status(unit)
    web, db = (container.host_path(f"/run/vfs/{vm}.sock") for vm in ("web", "db"))
    for sock in (web, db):
        with VhostUserFrontend(str(sock), timeout_s=LIMIT_S) as vmm:
            assert vmm.get_features() > 0
    container.systemctl("stop", "healer-holder@web.service")
    assert container.prop("healer@web.service", "ActiveState") == "inactive"
    assert not web.exists()
    assert container.prop("healer@db.service", "ActiveState") == "active"
    with VhostUserFrontend(str(db), timeout_s=LIMIT_S) as vmm:
        assert vmm.get_features() > 0
