"""The manager of virtiofsd killed, restarted or reloaded while a VMM is connected: what
the VMM sees, for healer and for the usual ways to keep virtiofsd running.

The VMM stand-in is one vhost-user client (``healer.sim.VhostUserFrontend``) on a prober
thread: it asks GET_FEATURES every 10 ms on one open session. A round trip that fails (EOF,
reset, timeout) is one *session drop*; the prober then connects again every 10 ms, counting
``ConnectionRefusedError``/``FileNotFoundError`` as *refused connects*, until a GET_FEATURES
is answered again (the *outage*: drop -> answered). Every round starts from nothing (a new
manager, a new daemon, a new session) and ends once the manager is back and the VMM has
been served for 1 s on end; then everything of the round is stopped. Nothing here asserts
a time: it prints what happened.

Faults, per peer (``n/a`` where a fault does not exist for it):

- ``kill -9``: SIGKILL of the manager, started again after 1.0 s;
- ``restart``: the manager stopped the way it is meant to be stopped, then started;
- ``reload``: the manager asked to read its configuration again;
- ``virtiofsd -9``: SIGKILL of the virtiofsd serving the VMM, the manager left alone: the
  respawn as each manager does it (its outage and refused connects; the loop's
  ``sleep 0.5`` and systemd's ``RestartSec=0.5`` are what users write).

Then *death while the manager is away*: the manager is killed -9 (or stopped), the
virtiofsd serving the VMM is SIGKILLed, 1.0 s later the manager is started again. Printed:
manager start -> the VMM served again (median and max over the rounds), refused connects
in that window, and refused connects while the manager was away.

Peers, all with the real virtiofsd (``healer.supervise.find_daemon()``), in one run:

1. ``healer (holder)``: ``healer watch --config C`` as a subprocess with the shipped rules;
   the holder it starts keeps the socket and the daemon (``--fd``). kill -9 = SIGKILL of
   ``healer watch``; restart = SIGTERM, wait for its exit, start; reload = SIGHUP. Each
   round ends with ``healer stop --config C``.
2. ``while-true loop``: ``bash -c 'while true; do virtiofsd --socket-path=S ...; sleep 0.5;
   done'`` in a session of its own (the user's vm.sh). kill -9 = SIGKILL of the shell and
   a new loop 1.0 s later (the user runs vm.sh again); restart = SIGTERM to the loop's
   process group, then a new loop; no reload.
3. ``supervisord`` (``apt-get install supervisor``, skipped when it is missing): the
   documented configuration in the round's directory: ``[unix_http_server]`` (a private
   socket), ``[supervisord] nodaemon=true``, ``[rpcinterface:supervisor]``,
   ``[supervisorctl]``, ``[program:virtiofsd] command=virtiofsd --socket-path=S ...
   autorestart=true startsecs=0 stopasgroup=true killasgroup=true``. kill -9 = SIGKILL of
   supervisord, started again 1.0 s later; restart = SIGTERM (it stops its children), then
   started again; reload = ``supervisorctl -c CONF reload``. That supervisord is back is
   read in its log, not asked with supervisorctl: a call would wake its main loop, which
   otherwise starts the program after its first 1 s poll.
4. ``systemd, no fd store``: a real systemd 252 as PID 1 of a container
   (tests/systemd_rig.py; needs root and systemd-nspawn, skipped without them), a unit
   ``virtiofsd.service`` with ``ExecStart=virtiofsd --socket-path=/run/vfs/direct.sock
   ...``, ``Restart=always``, ``RestartSec=0.5`` (what a user writes), reached from the
   host through the container's /proc/PID/root. restart = ``systemctl restart virtiofsd``,
   reload = ``systemctl reload-or-restart virtiofsd``; kill -9 is n/a (PID 1 is the
   manager; ``systemctl kill -s KILL virtiofsd`` is the daemon's death, not the
   manager's), and so is death while away (PID 1 is never away). The container gets the
   unified cgroup hierarchy (v2, as on a current host) even on a legacy host: under a
   legacy one systemd in the container has no cgroup-empty events, and a stop whose
   last process is virtiofsd's sandbox child hangs until ``TimeoutStopSec`` (90 s);
   ``--legacy-cgroups`` boots it that way.
5. ``systemd, socket unit``: the same daemon and ``Restart=``, but a socket unit
   ``virtiofsd-held.socket`` (``ListenStream=``, ``Accept=no``) holds the listener and
   passes it as fd 3 (``--fd=3``): a daemon's death leaves the socket listening.
6. ``healer (systemd units)``: the shipped deploy/healer-holder.service and
   deploy/healer.service in the same container, installed as tests/test_systemd_units.py
   does. kill -9 = ``systemctl kill -s KILL healer`` (``Restart=`` brings it back);
   restart = ``systemctl restart healer``; reload = ``systemctl reload healer``; away =
   ``systemctl stop healer``, then ``systemctl start healer``. Each round starts with a
   fresh journal (``systemctl stop healer-holder`` in between).

Every wait is bounded (30 s); every process a round starts is ended when the round ends
(in a ``finally``), and anything left that names the round's directory is killed by pid.
Run (a few minutes; use fewer rounds on a busy machine; ``--peers loop supervisord``
runs only the peers whose name contains one of the words):

    apt-get install -y supervisor     # for the supervisord peer only
    .venv/bin/python bench/restart_peers.py --rounds 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import systemd_rig  # noqa: E402
from _healer import healer_stop  # noqa: E402
from systemd_rig import Container  # noqa: E402
from test_systemd_units import SOCKET as UNITS_SOCKET  # noqa: E402
from test_systemd_units import daemons as unit_daemons  # noqa: E402
from test_systemd_units import install  # noqa: E402
from watching import daemon_pid  # noqa: E402

from healer.sim import VhostUserError, VhostUserFrontend  # noqa: E402
from healer.supervise import DaemonInfo, find_daemon  # noqa: E402
from healer.supervise.process import children  # noqa: E402

LIMIT_S = 30.0  # the bound of every wait
AWAY_S = 1.0  # the manager gone this long
QUIET_S = 1.0  # a round ends once the VMM was served this long after the fault
PROBE_EVERY_S = 0.01
FRESH_S = 0.2  # an answer this recent: the VMM is being served
FAULTS = ("kill -9", "restart", "reload", "virtiofsd -9")
AWAY = "away"


# --- the VMM ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    drops: int
    refused: int
    longest_s: float | None


def first_session(path: str) -> VhostUserFrontend:
    """A client that has been answered once; connects until then (bounded)."""
    deadline = time.monotonic() + LIMIT_S
    while True:
        try:
            client = VhostUserFrontend(path, timeout_s=LIMIT_S)
        except OSError:
            client = None
        if client is not None:
            try:
                client.get_features()
            except (VhostUserError, OSError):
                client.close()
            else:
                return client
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} was not served within {LIMIT_S} s")
        time.sleep(PROBE_EVERY_S)


class Prober:
    """The VMM stand-in (see the module docstring), for the length of a ``with`` block."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.drops: list[float] = []
        self.refusals: list[float] = []
        self.outages: list[tuple[float, float]] = []
        self.down_since: float | None = None
        self.up_since = 0.0
        self.answered = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._client: VhostUserFrontend | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Prober:
        self._client = first_session(self.path)
        self.up_since = self.answered = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(LIMIT_S + 5)
        if self._client is not None:
            self._client.close()

    def _run(self) -> None:
        while not self._stop.wait(PROBE_EVERY_S):
            if self._client is None:
                self._client = self._reconnect()
                if self._client is None:
                    continue
            try:
                self._client.get_features()
            except (VhostUserError, OSError):  # EOF, reset, timeout
                self._client.close()
                self._client = None
                self._dropped()
                continue
            self._served()

    def _reconnect(self) -> VhostUserFrontend | None:
        try:
            return VhostUserFrontend(self.path, timeout_s=LIMIT_S)
        except (ConnectionRefusedError, FileNotFoundError):
            with self._lock:
                self.refusals.append(time.monotonic())
        except OSError:  # a full backlog, say: tried again, not a refusal
            pass
        return None

    def _dropped(self) -> None:
        with self._lock:
            if self.down_since is None:  # a failure during an outage is the same outage
                self.down_since = time.monotonic()
                self.drops.append(self.down_since)

    def _served(self) -> None:
        now = time.monotonic()
        with self._lock:
            if self.down_since is not None:
                self.outages.append((self.down_since, now))
                self.down_since = None
                self.up_since = now
            self.answered = now

    def steady_since(self) -> float | None:
        """Since when the VMM is served without a break; None while it is not."""
        with self._lock:
            if self.down_since is not None or time.monotonic() - self.answered > FRESH_S:
                return None
            return self.up_since

    def tally(self, since: float) -> Tally:
        with self._lock:
            lengths = [end - start for start, end in self.outages if start >= since]
            return Tally(
                sum(1 for t in self.drops if t >= since),
                sum(1 for t in self.refusals if t >= since),
                max(lengths) if lengths else None,
            )

    def refused_between(self, start: float, end: float) -> int:
        with self._lock:
            return sum(1 for t in self.refusals if start <= t <= end)

    def served_after(self, since: float) -> float:
        """When the VMM was served again after a drop at or after ``since`` (waits)."""
        deadline = time.monotonic() + LIMIT_S
        while True:
            with self._lock:
                ends = [end for start, end in self.outages if start >= since]
            if ends:
                return ends[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"the VMM was not dropped and served again in {LIMIT_S} s")
            time.sleep(PROBE_EVERY_S)


def settle(prober: Prober, done: float) -> None:
    """Until the VMM has been served ``QUIET_S`` on end after ``done`` (bounded)."""
    deadline = done + LIMIT_S
    while True:
        now = time.monotonic()
        steady = prober.steady_since()
        if steady is not None and now - max(steady, done) >= QUIET_S:
            return
        if now > deadline:
            raise TimeoutError(f"the VMM was not served for {QUIET_S} s within {LIMIT_S} s")
        time.sleep(PROBE_EVERY_S)


# --- processes ----------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], what: str, step_s: float = 0.01) -> None:
    deadline = time.monotonic() + LIMIT_S
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {LIMIT_S} s")
        time.sleep(step_s)


def reap(proc: subprocess.Popen[bytes]) -> None:
    """Wait for a child we signalled; SIGKILL if it does not end in time."""
    try:
        proc.wait(timeout=LIMIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=LIMIT_S)


def marked(marker: str) -> list[int]:
    """The pids whose command line names ``marker`` (a directory of this run)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if os.fsencode(marker) in argv:
            found.append(int(entry.name))
    return found


def kill_marked(work: Path) -> None:
    """SIGKILL what is left of a round: processes naming its directory (all started by
    it: the orphaned daemons of a killed manager, say); waits until they are gone."""
    marker = f"{work}/"
    for pid in marked(marker):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not marked(marker), f"the processes of {work} to end")


def socket_argv(daemon: DaemonInfo, sock: str, shared: str) -> list[str]:
    """virtiofsd on a socket path of its own (no held socket), in its own spelling."""
    flags = [a for a in daemon.argv(shared_dir=shared)[1:] if "{fd}" not in a and a != "--fd"]
    on = [f"--socket-path={sock}"] if daemon.implementation == "c" else ["--socket-path", sock]
    return [daemon.path, *on, *flags]


def log_to(path: Path, argv: list[str], *, new_session: bool) -> subprocess.Popen[bytes]:
    with path.open("ab") as log:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )


# --- peers --------------------------------------------------------------------------------


class Peer:
    """A manager of virtiofsd. ``up`` starts it afresh and returns the VMM's socket; the
    faults return once the manager is back; ``leave`` and ``back`` are the away measure."""

    name = ""
    na: frozenset[str] = frozenset()  # faults (and AWAY) that do not apply: printed n/a

    def up(self, work: Path) -> Path:
        raise NotImplementedError

    def down(self) -> None:
        raise NotImplementedError

    def kill9(self) -> None:
        raise NotImplementedError

    def restart(self) -> None:
        raise NotImplementedError

    def reload(self) -> None:
        raise NotImplementedError

    def leave(self) -> None:
        """The manager gone (killed -9 or stopped), then the serving virtiofsd SIGKILLed."""
        raise NotImplementedError

    def back(self) -> None:
        """The manager started again (returns once it is started, not served)."""
        raise NotImplementedError

    def kill_daemon(self) -> None:
        """SIGKILL of the virtiofsd serving the VMM (returns at once: the prober sees the
        respawn)."""
        raise NotImplementedError

    def inject(self, fault: str) -> None:
        faults = {"kill -9": self.kill9, "restart": self.restart, "reload": self.reload}
        faults["virtiofsd -9"] = self.kill_daemon
        faults[fault]()


class OneProcess(Peer):
    """A manager that is one process started here (``_start``; ``_ready`` waits until it
    is up): kill -9 = SIGKILL, started again after ``AWAY_S``; restart = SIGTERM, wait for
    its exit, start; back = start."""

    proc: subprocess.Popen[bytes] | None = None

    def _start(self) -> None:
        raise NotImplementedError

    def _ready(self) -> None:
        raise NotImplementedError

    def _signal(self, signo: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(signo)
        reap(self.proc)

    def kill9(self) -> None:
        self._signal(signal.SIGKILL)
        time.sleep(AWAY_S)
        self._start()
        self._ready()

    def restart(self) -> None:
        self._signal(signal.SIGTERM)
        self._start()
        self._ready()

    def back(self) -> None:
        self._start()


class HealerWatch(OneProcess):
    name = "healer (holder)"

    def __init__(self, daemon: DaemonInfo) -> None:
        self.daemon = daemon
        self.work = Path()
        self.starts = 0

    @property
    def config(self) -> Path:
        return self.work / "healer.toml"

    def up(self, work: Path) -> Path:
        self.work, self.starts = work, 0
        (work / "shared").mkdir()
        listed = ", ".join(f'"{a}"' for a in self.daemon.argv(shared_dir="{shared_dir}"))
        self.config.write_text(
            f'[healer]\njournal = "{work / "journal"}"\nruntime = "{work / "run"}"\n'
            'metrics = "off"\n\n'
            f'[[share]]\nname = "bench"\nsocket = "{work / "vmm.sock"}"\n'
            f'shared_dir = "{work / "shared"}"\nvirtiofsd = [{listed}]\n'
        )
        self._start()
        self._ready()
        return work / "vmm.sock"

    def _start(self) -> None:
        argv = [sys.executable, "-m", "healer", "watch", "--config", str(self.config)]
        self.proc = log_to(self.work / "watch.log", argv, new_session=False)
        self.starts += 1

    def _logged(self, text: str) -> int:
        return (self.work / "watch.log").read_text(errors="replace").count(text)

    def _ready(self) -> None:
        """``healer watch`` logs "started healer" once every share is held and its daemon
        started."""
        brain = self.proc
        assert brain is not None

        def ready() -> bool:
            if brain.poll() is not None:
                raise RuntimeError(f"healer watch exited {brain.returncode}: see {self.work}")
            return self._logged("INFO started healer ") >= self.starts

        wait_until(ready, "healer watch ready")

    def reload(self) -> None:
        assert self.proc is not None
        before = self._logged("INFO reloaded ")
        self.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: self._logged("INFO reloaded ") > before, "healer reloaded")

    def leave(self) -> None:
        self._signal(signal.SIGKILL)
        self.kill_daemon()

    def kill_daemon(self) -> None:
        pid = daemon_pid(self.config, "bench")
        assert pid is not None, "no daemon recorded by the holder"
        os.kill(pid, signal.SIGKILL)

    def down(self) -> None:
        try:
            if self.proc is not None and self.proc.returncode is None:
                self._signal(signal.SIGTERM)
            healer_stop(self.config, limit_s=LIMIT_S)
        finally:
            kill_marked(self.work)


class Loop(Peer):
    name = "while-true loop"
    na = frozenset({"reload"})

    def __init__(self, daemon: DaemonInfo) -> None:
        self.daemon = daemon
        self.work = Path()
        self.shell: subprocess.Popen[bytes] | None = None

    def up(self, work: Path) -> Path:
        self.work = work
        (work / "shared").mkdir()
        self._start()
        return work / "vmm.sock"

    def _start(self) -> None:
        argv = socket_argv(self.daemon, str(self.work / "vmm.sock"), str(self.work / "shared"))
        log = shlex.quote(str(self.work / "virtiofsd.log"))
        command = f"while true; do {shlex.join(argv)} 2>>{log}; sleep 0.5; done"
        bash = shutil.which("bash") or "/bin/bash"
        self.shell = log_to(self.work / "loop.log", [bash, "-c", command], new_session=True)

    def _serving(self) -> int:
        assert self.shell is not None
        shell = self.shell
        wait_until(lambda: bool(children(shell.pid)), "the loop's virtiofsd")
        return children(shell.pid)[-1]

    def _kill_shell(self) -> None:
        assert self.shell is not None
        self.shell.kill()  # the shell only: its virtiofsd lives on, nobody's child
        reap(self.shell)

    def kill9(self) -> None:
        self._kill_shell()
        time.sleep(AWAY_S)
        self._start()

    def restart(self) -> None:
        assert self.shell is not None
        os.killpg(self.shell.pid, signal.SIGTERM)  # our group: the shell is not reaped yet
        reap(self.shell)
        self._start()

    def leave(self) -> None:
        pid = self._serving()
        self._kill_shell()
        os.kill(pid, signal.SIGKILL)

    def kill_daemon(self) -> None:
        os.kill(self._serving(), signal.SIGKILL)

    def back(self) -> None:
        self._start()

    def down(self) -> None:
        try:
            if self.shell is not None and self.shell.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.shell.pid, signal.SIGKILL)
                reap(self.shell)
        finally:
            kill_marked(self.work)


SUPERVISORD_CONF = """\
[unix_http_server]
file={work}/supervisor.sock
chmod=0700

[supervisord]
nodaemon=true
logfile={work}/supervisord.log
pidfile={work}/supervisord.pid
childlogdir={work}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://{work}/supervisor.sock

[program:virtiofsd]
command={command}
autorestart=true
startsecs=0
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile={work}/virtiofsd.log
"""


STARTED = "supervisord started with pid"
SPAWNED = "spawned: 'virtiofsd'"


class Supervisord(OneProcess):
    name = "supervisord"

    def __init__(self, daemon: DaemonInfo, supervisord: str, supervisorctl: str) -> None:
        self.daemon = daemon
        self.supervisord, self.supervisorctl = supervisord, supervisorctl
        self.work = Path()
        self.starts = 0

    @property
    def conf(self) -> Path:
        return self.work / "supervisord.conf"

    def up(self, work: Path) -> Path:
        self.work = work
        (work / "shared").mkdir()
        argv = socket_argv(self.daemon, str(work / "vmm.sock"), str(work / "shared"))
        self.conf.write_text(SUPERVISORD_CONF.format(work=work, command=shlex.join(argv)))
        self.starts = 0
        self._start()
        return work / "vmm.sock"

    def _start(self) -> None:
        argv = [self.supervisord, "-c", str(self.conf)]
        self.proc = log_to(self.work / "supervisord.out", argv, new_session=True)
        self.starts += 1

    def _logged(self, text: str) -> int:
        try:
            return (self.work / "supervisord.log").read_text(errors="replace").count(text)
        except FileNotFoundError:
            return 0

    def _ready(self) -> None:
        """supervisord has started (read in its log: a supervisorctl call would wake its
        main loop, which otherwise spawns the program after its first 1 s poll)."""
        wait_until(lambda: self._logged(STARTED) >= self.starts, "supervisord started")

    def reload(self) -> None:
        before = self._logged(SPAWNED)
        done = subprocess.run(
            [self.supervisorctl, "-c", str(self.conf), "reload"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=LIMIT_S,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"supervisorctl reload: {done.stdout}{done.stderr}")
        wait_until(lambda: self._logged(SPAWNED) > before, "virtiofsd spawned again")

    def _serving(self) -> int:
        assert self.proc is not None
        proc = self.proc
        wait_until(lambda: bool(children(proc.pid)), "supervisord's virtiofsd")
        return children(proc.pid)[-1]

    def leave(self) -> None:
        pid = self._serving()
        self._signal(signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)

    def kill_daemon(self) -> None:
        os.kill(self._serving(), signal.SIGKILL)

    def down(self) -> None:
        try:
            if self.proc is not None and self.proc.returncode is None:
                self._signal(signal.SIGTERM)
        finally:
            kill_marked(self.work)


def ctl(container: Container, *args: str, check: bool = True) -> None:
    """``systemctl ARGS`` in the container, bounded by ``LIMIT_S``."""
    container.run("systemctl", "--no-pager", *args, check=check, limit_s=LIMIT_S)


DIRECT_UNIT = "virtiofsd.service"
DIRECT_SOCKET = "/run/vfs/direct.sock"
DIRECT_SHARED = "/var/lib/direct"


class SystemdDirect(Peer):
    name = "systemd, no fd store"
    na = frozenset({"kill -9", AWAY})
    unit = DIRECT_UNIT
    socket = DIRECT_SOCKET
    shared = DIRECT_SHARED
    restart_sec = "0.5"

    def __init__(self, container: Container, daemon: DaemonInfo) -> None:
        self.container = container
        (container.root / self.shared.lstrip("/")).mkdir(parents=True)
        container.run("mkdir", "-p", "/run/vfs")
        argv = socket_argv(daemon, self.socket, self.shared)
        container.write_unit(
            self.unit,
            f"[Unit]\nDescription=virtiofsd on a socket path\n{self.limits()}\n"
            f"[Service]\nExecStart={shlex.join(argv)}\nRestart=always\n"
            f"RestartSec={self.restart_sec}\n",
        )

    def limits(self) -> str:
        """``RestartSec=0`` needs the start limit off too, or five kills in 10 s fail the
        unit for good (what a user who writes it learns at once)."""
        return "StartLimitIntervalSec=0\n" if self.restart_sec == "0" else ""

    def up(self, work: Path) -> Path:
        ctl(self.container, "reset-failed", self.unit, check=False)  # start limits
        ctl(self.container, "start", self.unit)
        return self.container.host_path(self.socket)

    def restart(self) -> None:
        ctl(self.container, "restart", self.unit)

    def reload(self) -> None:
        ctl(self.container, "reload-or-restart", self.unit)

    def kill_daemon(self) -> None:
        ctl(self.container, "kill", "-s", "KILL", self.unit)  # all of it: a daemon's death

    def down(self) -> None:
        ctl(self.container, "stop", self.unit)


HELD_SOCKET_UNIT = "virtiofsd-held.socket"
HELD_UNIT = "virtiofsd-held.service"
HELD_SOCKET = "/run/vfs/held.sock"
HELD_SHARED = "/var/lib/held"


class SystemdSocket(SystemdDirect):
    """virtiofsd under systemd with a socket unit holding the listener (``Accept=no``:
    the daemon gets the listening fd as fd 3, ``--fd=3``), ``Restart=always``,
    ``RestartSec=0.5``: the fairest systemd setup, whose socket outlives the daemon.
    The faults are the unit's, as for :class:`SystemdDirect`."""

    name = "systemd, socket unit"
    unit = HELD_UNIT
    socket = HELD_SOCKET
    shared = HELD_SHARED
    socket_unit = HELD_SOCKET_UNIT

    def __init__(self, container: Container, daemon: DaemonInfo) -> None:
        self.container = container
        (container.root / self.shared.lstrip("/")).mkdir(parents=True)
        container.run("mkdir", "-p", "/run/vfs")
        argv = [a.replace("{fd}", "3") for a in daemon.argv(shared_dir=self.shared)]
        container.write_unit(
            self.socket_unit,
            f"[Socket]\nListenStream={self.socket}\nSocketMode=0600\nAccept=no\n",
            reload=False,
        )
        container.write_unit(
            self.unit,
            f"[Unit]\nDescription=virtiofsd on a held socket\nRequires={self.socket_unit}\n"
            f"After={self.socket_unit}\n{self.limits()}\n"
            f"[Service]\nExecStart={shlex.join(argv)}\nRestart=always\n"
            f"RestartSec={self.restart_sec}\n",
        )

    def up(self, work: Path) -> Path:
        ctl(self.container, "reset-failed", self.socket_unit, check=False)
        ctl(self.container, "start", self.socket_unit)
        super().up(work)
        return self.container.host_path(self.socket)

    def down(self) -> None:
        super().down()
        ctl(self.container, "stop", self.socket_unit)


class SystemdDirectNow(SystemdDirect):
    """:class:`SystemdDirect` with ``RestartSec=0`` (and the start limit off)."""

    name = "systemd RestartSec=0, no fd store"
    unit = "virtiofsd-now.service"
    socket = "/run/vfs/now.sock"
    shared = "/var/lib/now"
    restart_sec = "0"


class SystemdSocketNow(SystemdSocket):
    """:class:`SystemdSocket` with ``RestartSec=0`` (and the start limit off)."""

    name = "systemd RestartSec=0, socket unit"
    unit = "virtiofsd-held-now.service"
    socket = "/run/vfs/held-now.sock"
    shared = "/var/lib/held-now"
    socket_unit = "virtiofsd-held-now.socket"
    restart_sec = "0"


class HealerUnits(Peer):
    name = "healer (systemd units)"
    unit = "healer.service"
    holder = "healer-holder.service"

    def __init__(self, container: Container, daemon: DaemonInfo) -> None:
        self.container = container
        install(container, daemon)

    def up(self, work: Path) -> Path:
        ctl(self.container, "stop", self.holder)  # and healer.service with it
        self.container.run("rm", "-rf", "/var/lib/healer/journal")
        ctl(self.container, "reset-failed", self.unit, self.holder, check=False)
        ctl(self.container, "start", self.unit)  # pulls the holder in; returns once READY=1
        return self.container.host_path(UNITS_SOCKET)

    def _main_pid(self) -> str:
        return self.container.prop(self.unit, "MainPID")

    def _active(self, old: str) -> bool:
        show = self.container.show(self.unit, "MainPID", "ActiveState")
        return show["MainPID"] not in ("0", old) and show["ActiveState"] == "active"

    def _reloads(self) -> int:
        return self.container.journal(self.unit).count("reloaded /etc/healer/healer.toml")

    def kill9(self) -> None:
        before = self._main_pid()
        ctl(self.container, "kill", "-s", "KILL", self.unit)
        wait_until(lambda: self._active(before), "healer restarted by systemd", 0.05)

    def restart(self) -> None:
        ctl(self.container, "restart", self.unit)

    def reload(self) -> None:
        before = self._reloads()
        ctl(self.container, "reload", self.unit)
        wait_until(lambda: self._reloads() > before, "healer reloaded", 0.05)

    def leave(self) -> None:
        ctl(self.container, "stop", self.unit)
        pids = unit_daemons(self.container)
        assert pids, "no virtiofsd in healer-holder.service"
        self.container.run("kill", "-KILL", *pids)

    def back(self) -> None:
        ctl(self.container, "start", self.unit)

    def kill_daemon(self) -> None:
        pids = unit_daemons(self.container)
        assert pids, "no virtiofsd in healer-holder.service"
        self.container.run("kill", "-KILL", pids[0])

    def down(self) -> None:
        ctl(self.container, "stop", self.holder)


# --- rounds -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Away:
    served_s: float  # manager start -> the VMM served again
    refused_after: int  # refused connects in that window
    refused_away: int  # refused connects while the manager was away


@contextlib.contextmanager
def fresh(peer: Peer, work: Path) -> Iterator[Prober]:
    """The peer started afresh in ``work`` and the VMM served; everything ended after."""
    work.mkdir()
    try:
        with Prober(peer.up(work)) as prober:
            yield prober
    finally:
        peer.down()


def fault_round(peer: Peer, fault: str, work: Path) -> Tally:
    with fresh(peer, work) as prober:
        start = time.monotonic()
        peer.inject(fault)
        settle(prober, time.monotonic())
        return prober.tally(start)


def away_round(peer: Peer, work: Path) -> Away:
    with fresh(peer, work) as prober:
        gone = time.monotonic()
        peer.leave()
        time.sleep(AWAY_S)
        started = time.monotonic()
        peer.back()
        served = prober.served_after(gone)
        return Away(
            served - started,
            prober.refused_between(started, served),
            prober.refused_between(gone, started),
        )


def fault_row(peer: Peer, fault: str, rounds: int, tmp: Path) -> str:
    cells = [peer.name, fault]
    if fault in peer.na:
        return row([*cells, "n/a", "n/a", "n/a"])
    try:
        tallies = [
            fault_round(peer, fault, tmp / slug(f"{peer.name} {fault} {i}")) for i in range(rounds)
        ]
    except Exception as exc:
        print(f"{peer.name}, {fault}: {exc!r}", file=sys.stderr)
        return row([*cells, "error", "error", "error"])
    longest = [t.longest_s for t in tallies if t.longest_s is not None]
    return row(
        [
            *cells,
            str(sum(t.drops for t in tallies)),
            str(sum(t.refused for t in tallies)),
            f"{max(longest) * 1000:.0f}" if longest else "-",
        ]
    )


def away_row(peer: Peer, rounds: int, tmp: Path) -> str:
    if AWAY in peer.na:
        return row([peer.name, "n/a", "n/a", "n/a", "n/a"])
    try:
        results = [away_round(peer, tmp / slug(f"{peer.name} away {i}")) for i in range(rounds)]
    except Exception as exc:
        print(f"{peer.name}, death while away: {exc!r}", file=sys.stderr)
        return row([peer.name, "error", "error", "error", "error"])
    ms = [a.served_s * 1000 for a in results]
    return row(
        [
            peer.name,
            f"{statistics.median(ms):.0f}",
            f"{max(ms):.0f}",
            str(sum(a.refused_after for a in results)),
            str(sum(a.refused_away for a in results)),
        ]
    )


def slug(text: str) -> str:
    """A directory name for a round: ``healer (holder) kill -9 0`` -> ``healer-holder-kill-9-0``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


# --- main ---------------------------------------------------------------------------------


def host_peers(daemon: DaemonInfo, wanted: Callable[[str], bool]) -> list[Peer]:
    peers: list[Peer] = [kind(daemon) for kind in (HealerWatch, Loop) if wanted(kind.name)]
    if not wanted(Supervisord.name):
        return peers
    supervisord, supervisorctl = shutil.which("supervisord"), shutil.which("supervisorctl")
    if supervisord is None or supervisorctl is None:
        print("supervisor is not installed: apt-get install supervisor")
    else:
        peers.append(Supervisord(daemon, supervisord, supervisorctl))
    return peers


@contextlib.contextmanager
def unified_cgroups(wanted: bool) -> Iterator[None]:
    """nspawn told to give the container the unified cgroup hierarchy (cgroup v2), as on
    a current host. On a legacy (v1) host nspawn's default is legacy, where systemd in the
    container gets no cgroup-empty events: a stop whose last process is not the main one
    (virtiofsd's sandbox child) then hangs in final-sigterm until TimeoutStopSec."""
    variable = "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"
    before = os.environ.get(variable)
    if wanted:
        os.environ[variable] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = before


@contextlib.contextmanager
def systemd_peers(
    daemon: DaemonInfo, tmp: Path, wanted: Callable[[str], bool], *, unified: bool
) -> Iterator[list[Peer]]:
    """The systemd peers in one booted container (none, and why, without the rig)."""
    every = (SystemdDirect, SystemdDirectNow, SystemdSocket, SystemdSocketNow, HealerUnits)
    kinds = [kind for kind in every if wanted(kind.name)]
    lacking = systemd_rig.missing()
    if not kinds or lacking is not None:
        if kinds:
            print(f"systemd peers skipped: they need {lacking}")
        yield []
        return
    with unified_cgroups(unified):
        container = Container.boot(tmp / "container" / "root")
    try:
        yield [kind(container, daemon) for kind in kinds]
    finally:
        container.stop()


def run(peers: list[Peer], rounds: int, tmp: Path) -> tuple[list[str], list[str]]:
    """The two tables' rows, in peer order."""
    faults = [fault_row(p, f, rounds, tmp) for p in peers for f in FAULTS]
    aways = [away_row(p, rounds, tmp) for p in peers]
    return faults, aways


def report(daemon: DaemonInfo, rounds: int, faults: list[str], aways: list[str]) -> None:
    print(
        f"manager killed, restarted, reloaded with a VMM connected: {daemon.path} "
        f"({daemon.implementation} {daemon.version}), {rounds} rounds per peer and fault "
        "(drops and refused connects summed over the rounds)"
    )
    print()
    print("| peer | fault | session drops | refused connects | longest outage ms |")
    print("|---|---|---|---|---|")
    print("\n".join(faults))
    print()
    print(
        f"death while the manager is away (manager gone, the serving virtiofsd SIGKILLed, "
        f"{AWAY_S} s, manager started), {rounds} rounds"
    )
    print()
    print(
        "| peer | manager start -> served ms (median) | max ms "
        "| refused connects (start -> served) | refused connects while away |"
    )
    print("|---|---|---|---|---|")
    print("\n".join(aways))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--legacy-cgroups",
        action="store_true",
        help="boot the systemd container with nspawn's default hierarchy (legacy on a v1 host)",
    )
    parser.add_argument(
        "--peers", nargs="*", default=[], help="only the peers whose name contains one of these"
    )
    args = parser.parse_args()
    daemon = find_daemon()
    if daemon is None:
        print("virtiofsd is not installed (apt-get install qemu-system-common)", file=sys.stderr)
        return 2

    def wanted(name: str) -> bool:
        return not args.peers or any(part in name for part in args.peers)

    with tempfile.TemporaryDirectory(prefix="healer-peers-") as name:
        tmp = Path(name)
        try:
            faults, aways = run(host_peers(daemon, wanted), args.rounds, tmp)
            with systemd_peers(daemon, tmp, wanted, unified=not args.legacy_cgroups) as peers:
                more_faults, more_aways = run(peers, args.rounds, tmp)
        finally:
            kill_marked(tmp)
    report(daemon, args.rounds, faults + more_faults, aways + more_aways)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
