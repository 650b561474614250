"""Helpers for tests that run `healer watch` as a real process and read its journal.

`healer watch` is the brain only: the holder it starts (``python -m healer.holder``,
nobody's child) owns the shares' sockets and is the parent of every virtiofsd, and it
outlives the brain. So a share's daemon is found in the holder's state
(``holder.json``), not among the brain's children; SIGTERM stops the brain and leaves
the daemon serving; ``healer stop --config`` ends everything. Every helper here that
starts a brain ends with ``healer stop``, so no holder or daemon outlives a test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import pytest
from conftest import wait_for

from healer.config import load_config
from healer.engine import Decision
from healer.events import Event
from healer.holder.state import Store, start_time
from healer.journal import DecisionRecord, EventRecord, OutcomeRecord, Record, read_records
from healer.live import holder_dir
from healer.supervise import DaemonInfo, is_listening
from healer.supervise.process import command_line, exists, probe_virtiofsd, running_daemon

ROOT = Path(__file__).resolve().parent.parent
STOP_BOUND_S = 60.0  # the holder stops each daemon with SIGTERM, then SIGKILL

E = TypeVar("E", bound=Event)


def expected_daemon() -> tuple[str, str] | None:
    """(implementation, version) of the daemon the test runs with: HEALER_VIRTIOFSD, which
    the virtiofsd fixture sets and `healer watch` (and so its holder) inherits."""
    path = os.environ.get("HEALER_VIRTIOFSD")
    info = probe_virtiofsd(path) if path else None
    return (info.implementation, info.version) if info else None


# --- the holder and its daemons ---------------------------------------------------------


def holder_directory(config: Path) -> Path:
    """Where the holder of ``config``'s shares keeps its lock, socket and state."""
    return holder_dir(load_config(config))


def holder_pid(config: Path) -> int | None:
    """The running holder of ``config``, from its lock file (a pid that is now another
    program, or a zombie, is no holder)."""
    try:
        text = (holder_directory(config) / "holder.lock").read_text().strip()
    except OSError:
        return None
    if not text.isdigit() or not exists(int(text)):
        return None
    argv = command_line(int(text)) or []
    return int(text) if "healer.holder" in argv else None


def daemons(config: Path) -> dict[str, int]:
    """share name -> pid of its running virtiofsd (see :func:`recorded_daemons`)."""
    return recorded_daemons(holder_directory(config))


def recorded_daemons(holder: Path) -> dict[str, int]:
    """share name -> pid of its running virtiofsd, as the holder in directory ``holder``
    records it (``holder.json``); a recorded pid is counted only while it is that very
    process (same start time: pids are reused) and has not exited."""
    shares, _exits = Store(holder / "holder.json").load()
    found = {}
    for share in shares:
        daemon = share.daemon
        if daemon is None or not exists(daemon.pid):
            continue
        if daemon.starttime is None or start_time(daemon.pid) == daemon.starttime:
            found[share.name] = daemon.pid
    return found


def daemon_pid(config: Path, share: str = "fs0") -> int | None:
    """The pid of ``share``'s running virtiofsd (see :func:`daemons`), or None."""
    return daemons(config).get(share)


def serving(config: Path, share: str = "fs0") -> int | None:
    """The pid of ``share``'s virtiofsd once it runs and the share's socket listens (the
    socket beside ``config``, as the tests' configurations put it), else None."""
    sock = config.parent / f"{share}.sock"
    pid = daemon_pid(config, share)
    return pid if pid is not None and sock.exists() and is_listening(sock) else None


def kill_serving_daemon(config: Path, share: str = "fs0") -> int:
    """SIGKILL the share's virtiofsd, checking first that it runs the daemon the test is
    parametrized with; a pid that vanished meanwhile is looked up again."""
    wanted = expected_daemon()
    found: list[tuple[int, DaemonInfo]] = []

    def runs() -> bool:  # recorded by the holder and exec'd (its --version answers)
        pid = daemon_pid(config, share)
        running = running_daemon(pid) if pid is not None else None
        if pid is None or running is None:
            return False
        found.append((pid, running))
        return True

    for _ in range(5):
        wait_for(runs)
        pid, running = found[-1]
        assert wanted is None or (running.implementation, running.version) == wanted
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        return pid
    pytest.fail(f"no running virtiofsd of {share} to kill")


def stop_everything(config: Path) -> subprocess.CompletedProcess[str]:
    """``healer stop --config``: the brain if it runs, then every daemon and socket; waits
    (bounded) until the holder and every daemon it ran are gone. Its output, for a test
    that reads what it said."""
    holder = holder_pid(config)
    running = list(daemons(config).values()) if holder is not None else []
    done = subprocess.run(
        [sys.executable, "-m", "healer", "stop", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=STOP_BOUND_S,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    if holder is not None:
        wait_for(lambda: not exists(holder), STOP_BOUND_S)
    wait_for(lambda: not any(exists(pid) for pid in running), STOP_BOUND_S)
    return done


@contextmanager
def everything_stopped(config: Path) -> Iterator[None]:
    """For a fixture or a test that starts healer itself: ``healer stop`` at the end, also
    when the block failed (then the block's error is the one reported)."""
    try:
        yield
    except BaseException:
        try:
            stop_everything(config)
        except Exception as exc:  # the block's failure is the one to report
            print(f"cleanup after a failure: {exc!r}")
        raise
    stop_everything(config)


def start_watch(config: Path, log: Path | None = None) -> subprocess.Popen[bytes]:
    """``healer watch --config CONFIG`` started (not waited for), its output appended to
    ``log`` or dropped (a pipe nobody reads could fill and stop it)."""
    argv = [sys.executable, "-m", "healer", "watch", "--config", str(config)]
    if log is None:
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with log.open("ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=out)


@contextmanager
def running_watch(config: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``healer watch`` for the duration of a block. At the end it must stop cleanly on
    SIGTERM (exit 0); then ``healer stop`` ends the holder and the daemons it left."""
    proc = start_watch(config)
    with everything_stopped(config):
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
                raise
        assert code == 0


# --- the journal, typed ------------------------------------------------------------------


def journal_records(journal: Path) -> list[Record]:
    """Every record of a journal that may not exist yet, or be rotating as it is read."""
    for _ in range(5):
        if not journal.exists():
            return []
        try:
            return list(read_records(journal))
        except FileNotFoundError:  # a segment compacted away between listing and reading
            continue
    return list(read_records(journal))


def events(journal: Path, kind: type[E]) -> list[E]:
    """The journaled events of one kind (a subclass of :class:`Event`), in order."""
    return [
        r.event
        for r in journal_records(journal)
        if isinstance(r, EventRecord) and isinstance(r.event, kind)
    ]


def decisions(journal: Path) -> list[Decision]:
    return [r.decision for r in journal_records(journal) if isinstance(r, DecisionRecord)]


def outcomes(journal: Path) -> list[OutcomeRecord]:
    return [r for r in journal_records(journal) if isinstance(r, OutcomeRecord)]


def recording_guest(root: Path) -> Path:
    """A guest transport for ``[guest] remount``: a script that appends its argv to
    ``root/guest.log``."""
    guest = root / "guest.py"
    guest.write_text(
        "import sys\n"
        f"with open({str(root / 'guest.log')!r}, 'a') as f:\n"
        "    f.write(' '.join(sys.argv[1:]) + '\\n')\n"
    )
    return guest


def write_setup(tmp_path: Path, shares: tuple[str, ...] = ("fs0",)) -> Path:
    """A healer.toml supervising ``shares`` with the real virtiofsd, and a recording guest
    (:func:`recording_guest`)."""
    guest = recording_guest(tmp_path)
    text = f'[healer]\njournal = "{tmp_path / "journal"}"\nrules = "{ROOT / "rules"}"\n\n'
    for name in shares:
        shared = tmp_path / ("shared" if name == shares[0] else f"shared-{name}")
        shared.mkdir(exist_ok=True)
        text += (
            f'[[share]]\nname = "{name}"\nsocket = "{tmp_path / f"{name}.sock"}"\n'
            f'shared_dir = "{shared}"\nmount_point = "/mnt/{name}"\n\n'
        )
    text += f'[guest]\nremount = ["{sys.executable}", "{guest}"]\nmount_point = "/mnt/fs0"\n'
    (tmp_path / "healer.toml").write_text(text)
    return tmp_path
