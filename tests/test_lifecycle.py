"""healer is never the cause of an outage: its own death, restart, reload, stray signals,
a second instance and a broken journal leave the shares served.

Real processes throughout: ``healer watch`` as a user starts it, the holder it starts,
the real virtiofsd of the matrix, and a real vhost-user front end as the VMM. A
"session" is one front end connection: it is dropped if virtiofsd dies. Waits are
bounded; no timing is asserted.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Reconnector, wait_for
from watching import (
    everything_stopped,
    holder_directory,
    holder_pid,
    recorded_daemons,
    start_watch,
    stop_everything,
)

from healer.journal import DecisionRecord, EventRecord, read_records
from healer.sim import VhostUserFrontend
from healer.supervise import DaemonInfo, is_listening
from healer.supervise.process import exists

ROOT = Path(__file__).resolve().parent.parent


def write_config(
    root: Path, shares: tuple[str, ...] = ("fs0",), journal: Path | None = None
) -> Path:
    text = (
        f'[healer]\njournal = "{journal or root / "journal"}"\n'
        f'rules = "{ROOT / "rules"}"\nmetrics = "off"\n\n'
    )
    for name in shares:
        (root / f"shared-{name}").mkdir(exist_ok=True)
        text += (
            f'[[share]]\nname = "{name}"\nsocket = "{root / f"{name}.sock"}"\n'
            f'shared_dir = "{root / f"shared-{name}"}"\n\n'
        )
    config = root / "healer.toml"
    config.write_text(text)
    return config


class Healer:
    """``healer watch`` processes on one configuration (see :func:`healing`)."""

    def __init__(self, config: Path, journal: Path) -> None:
        self.config = config
        self.journal = journal
        self.procs: list[subprocess.Popen[bytes]] = []
        self.runtime = holder_directory(config)

    def start(self) -> subprocess.Popen[bytes]:
        proc = start_watch(self.config, self.config.parent / "healer.log")
        self.procs.append(proc)
        return proc

    def log(self) -> str:
        return (self.config.parent / "healer.log").read_text(errors="replace")

    def daemon(self, share: str = "fs0") -> int | None:
        """The share's virtiofsd as the holder records it (its state file is in the
        runtime directory, not on the journal's disk that the tests break)."""
        return recorded_daemons(self.runtime).get(share)

    def stop_brains(self) -> None:
        """SIGTERM to every brain still running; healer's and the holder's logs go to
        stdout (shown on failure)."""
        print(self.log())
        with contextlib.suppress(OSError):
            print((self.runtime / "holder.log").read_text(errors="replace"))
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)


@contextlib.contextmanager
def healing(config: Path, journal: Path) -> Iterator[Healer]:
    """A :class:`Healer` for the block; at the end its brains are stopped, then everything
    else (``healer stop``), also when the block failed."""
    running = Healer(config, journal)
    with everything_stopped(config):
        try:
            yield running
        finally:
            running.stop_brains()


@pytest.fixture
def healer(short_dir: Path, virtiofsd: DaemonInfo) -> Iterator[Healer]:
    with healing(write_config(short_dir), short_dir / "journal") as running:
        yield running


def ready(healer: Healer, share: str = "fs0") -> int:
    """Wait until the share's daemon runs and its socket listens; its pid."""
    sock = healer.config.parent / f"{share}.sock"
    found: list[int] = []

    def up() -> bool:
        pid = healer.daemon(share)
        if pid is None or not sock.exists() or not is_listening(sock):
            return False
        found.append(pid)
        return True

    wait_for(up)
    return found[-1]


def decisions(journal: Path, action: str) -> list[DecisionRecord]:
    return [
        r
        for r in read_records(journal)
        if isinstance(r, DecisionRecord)
        and r.decision.action == action
        and r.decision.suppressed is None
    ]


def test_healer_killed_while_a_vmm_is_served_drops_no_session_and_refuses_nothing(
    healer: Healer, short_dir: Path
) -> None:
    brain = healer.start()
    daemon = ready(healer)
    sock = short_dir / "fs0.sock"
    vmm = VhostUserFrontend(str(sock), timeout_s=15)
    assert vmm.get_features() > 0
    brain.kill()  # SIGKILL: no clean-up of any kind
    brain.wait()
    with Reconnector(sock) as probes:  # connects while healer is away: queued, not refused
        time.sleep(0.3)
        assert vmm.get_features() > 0  # the session is the same one
        assert exists(daemon)
        healer.start()
        wait_for(lambda: "INFO started healer " in healer.log())
    assert probes.refused == 0
    assert probes.accepted > 0
    assert healer.daemon() == daemon  # taken over, not started again
    assert vmm.get_features() > 0
    vmm.close()


def test_a_daemon_that_dies_while_healer_is_away_is_served_again_when_it_is_back(
    healer: Healer, short_dir: Path
) -> None:
    brain = healer.start()
    daemon = ready(healer)
    brain.kill()
    brain.wait()
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: not exists(daemon))
    healer.start()
    wait_for(lambda: healer.daemon() not in (None, daemon))
    with VhostUserFrontend(str(short_dir / "fs0.sock"), timeout_s=15) as vmm:
        assert vmm.get_features() > 0
    wait_for(lambda: decisions(healer.journal, "respawn_virtiofsd"))
    healings = [
        d for d in decisions(healer.journal, "respawn_virtiofsd") if d.decision.note is None
    ]
    assert len(healings) == 1  # decided once (our front end's short session is a drain)


def test_a_second_healer_on_the_same_journal_is_refused_and_touches_nothing(
    healer: Healer, short_dir: Path
) -> None:
    first = healer.start()
    daemon = ready(healer)
    sock = short_dir / "fs0.sock"
    inode = sock.stat().st_ino
    wait_for(lambda: "INFO started healer " in healer.log())
    # the daemon's own "waiting for a connection" line, journaled: nothing more is due
    wait_for(lambda: _journaled(healer.journal, "VirtiofsdListening"), 30)
    segments = settled(healer.journal)
    second = subprocess.run(
        [sys.executable, "-m", "healer", "watch", "--config", str(healer.config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode == 5
    assert f"is in use by healer pid {first.pid} with {healer.config}" in second.stderr
    assert "Traceback" not in second.stderr
    assert sock.stat().st_ino == inode
    assert {p.name: p.stat().st_size for p in healer.journal.glob("segment-*")} == segments
    assert healer.daemon() == daemon
    assert first.poll() is None


@pytest.mark.parametrize("number", [signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE])
def test_stray_signals_are_logged_and_change_nothing(
    healer: Healer, short_dir: Path, number: signal.Signals
) -> None:
    brain = healer.start()
    daemon = ready(healer)
    os.kill(brain.pid, number)
    wait_for(lambda: f"{number.name} ignored" in healer.log())
    assert brain.poll() is None
    assert healer.daemon() == daemon
    with VhostUserFrontend(str(short_dir / "fs0.sock"), timeout_s=15) as vmm:
        assert vmm.get_features() > 0


def test_sighup_applies_a_good_configuration_and_keeps_the_running_one_on_a_bad_one(
    healer: Healer, short_dir: Path
) -> None:
    brain = healer.start()
    daemon = ready(healer)
    # a share added: held and started; the unchanged share is not touched
    write_config(short_dir, ("fs0", "fs1"))
    os.kill(brain.pid, signal.SIGHUP)
    ready(healer, "fs1")
    assert healer.daemon() == daemon
    with VhostUserFrontend(str(short_dir / "fs1.sock"), timeout_s=15) as vmm:
        assert vmm.get_features() > 0
    # a broken file: refused with file and line, the running configuration stays
    healer.config.write_text(healer.config.read_text() + "\n[[share]]\nname = 3\n")
    os.kill(brain.pid, signal.SIGHUP)
    wait_for(lambda: "reload refused" in healer.log())
    assert f"{healer.config}:" in healer.log()
    assert brain.poll() is None
    assert healer.daemon() == daemon
    ready(healer, "fs1")  # (its daemon may be between two: our front end left)
    # a file that is not UTF-8 text: refused the same way (it was a UnicodeDecodeError)
    good = healer.config.read_bytes()
    healer.config.write_bytes(good + b"\n# caf\xe9\n")
    os.kill(brain.pid, signal.SIGHUP)
    wait_for(lambda: "not UTF-8 text" in healer.log())
    assert healer.log().count("reload refused") == 2
    assert brain.poll() is None
    assert healer.daemon() == daemon
    # a share removed: its daemon stopped and its socket gone
    write_config(short_dir, ("fs0",))
    os.kill(brain.pid, signal.SIGHUP)
    wait_for(lambda: healer.daemon("fs1") is None and not (short_dir / "fs1.sock").exists())
    assert healer.daemon() == daemon


def test_sigterm_stops_healer_only_and_healer_stop_stops_everything(
    healer: Healer, short_dir: Path
) -> None:
    brain = healer.start()
    daemon = ready(healer)
    brain.send_signal(signal.SIGTERM)
    assert brain.wait(timeout=30) == 0
    assert exists(daemon)
    assert is_listening(short_dir / "fs0.sock")
    stop_everything(healer.config)  # `healer stop`; it asserts the exit 0
    wait_for(lambda: not exists(daemon))
    assert not (short_dir / "fs0.sock").exists()


def _root_only(what: str, result: subprocess.CompletedProcess[bytes]) -> None:
    if result.returncode == 0:
        return
    why = result.stderr.decode(errors="replace").strip()
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what}: {why}")
    pytest.skip(f"{what} needs root: {why}")


@contextlib.contextmanager
def small_disk(where: Path, fault: str) -> Iterator[Callable[[], None]]:
    """A small file system at ``where``; yields what breaks it: filling a 1 MiB tmpfs,
    or an ext4 error that turns it read-only (``errors=remount-ro``, as a failing disk
    does: open files then get EROFS)."""
    where.mkdir()
    image = where.with_suffix(".img")
    if fault == "full":
        _root_only(
            "a tmpfs",
            subprocess.run(
                ["/usr/bin/mount", "-t", "tmpfs", "-o", "size=1M,mode=0700", "tmpfs", str(where)],
                capture_output=True,
                check=False,
            ),
        )
    else:
        with image.open("wb") as file:
            file.truncate(16 << 20)
        subprocess.run(["/usr/sbin/mkfs.ext4", "-q", str(image)], check=True)
        _root_only(
            "an ext4 loop mount",
            subprocess.run(
                ["/usr/bin/mount", "-o", "loop,errors=remount-ro", str(image), str(where)],
                capture_output=True,
                check=False,
            ),
        )

    def break_it() -> None:
        if fault == "full":
            with contextlib.suppress(OSError), (where / "filler").open("wb") as file:
                while True:
                    file.write(b"\0" * 65536)
                    file.flush()
        else:
            device = subprocess.run(
                ["/usr/bin/findmnt", "-n", "-o", "SOURCE", str(where)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            trigger = Path("/sys/fs/ext4") / Path(device).name / "trigger_fs_error"
            trigger.write_text("healer test: the disk fails\n")

    try:
        yield break_it
    finally:
        subprocess.run(["/usr/bin/umount", "-l", str(where)], check=False)
        image.unlink(missing_ok=True)


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_journal_that_cannot_be_written_degrades_healing_but_never_the_share(
    short_dir: Path, virtiofsd: DaemonInfo, fault: str
) -> None:
    """The journal's disk fills up (or turns read-only) during a restart storm: every
    kill is still respawned and served, healer does not exit, and once the full disk has
    room again the journal catches up with what happened meanwhile (a read-only ext4
    cannot be made writable while mounted: healer then stops cleanly when asked)."""
    with small_disk(short_dir / "disk", fault) as break_it:
        journal = short_dir / "disk" / "journal"
        with healing(write_config(short_dir, journal=journal), journal) as healer:
            brain = healer.start()
            ready(healer)
            break_it()
            served = 0
            for _ in range(3):
                daemon = ready(healer)
                os.kill(daemon, signal.SIGKILL)
                wait_for(replaced(healer, daemon))
                with VhostUserFrontend(str(short_dir / "fs0.sock"), timeout_s=15) as vmm:
                    served += vmm.get_features() > 0
                time.sleep(0.6)  # the session outlives stale_session: a real recovery
            assert served == 3
            assert brain.poll() is None
            wait_for(lambda: "the journal cannot be written" in healer.log())
            if fault == "full":
                (short_dir / "disk" / "filler").unlink()
                wait_for(lambda: len(_exits(journal)) >= 4, 30)  # the first, and the storm
            brain.send_signal(signal.SIGTERM)
            assert brain.wait(timeout=30) == 0
            # and `healer stop` still ends everything, with the journal's disk as it is
            holder = holder_pid(healer.config)
            assert holder is not None
            stopped = stop_everything(healer.config)  # (it asserts the exit 0)
            assert "stopped the shares of" in stopped.stdout
            wait_for(lambda: not exists(holder))
            assert not (short_dir / "fs0.sock").exists()


def _journaled(journal: Path, kind: str) -> bool:
    try:
        records = read_records(journal)
    except OSError:
        return False
    return any(isinstance(r, EventRecord) and r.event.kind == kind for r in records)


def _exits(journal: Path) -> list[EventRecord]:
    try:
        return [
            r
            for r in read_records(journal)
            if isinstance(r, EventRecord) and r.event.kind == "VirtiofsdExited"
        ]
    except OSError:
        return []


def settled(journal: Path) -> dict[str, int]:
    """The journal's segment sizes once nothing has been written for half a second."""
    sizes: dict[str, int] = {}
    for _ in range(60):
        now = {p.name: p.stat().st_size for p in journal.glob("segment-*")}
        if now == sizes:
            return now
        sizes = now
        time.sleep(0.5)
    pytest.fail("the journal never settled")


def replaced(healer: Healer, daemon: int) -> Callable[[], bool]:
    return lambda: healer.daemon() not in (None, daemon)
