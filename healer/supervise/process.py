"""Which virtiofsd is installed or running, its argv for a held socket, and processes.

The argv is built from configuration only; ``{fd}`` is the one placeholder, filled
with the held socket's descriptor number. No shell is involved. ``healer watch`` does
not run virtiofsd itself: the holder does (:mod:`healer.holder.server`), so the daemon
outlives healer. :class:`SupervisedVirtiofsd` (a daemon as the child of the calling
process, killed with it) is used by nothing in healer any more; it stays only while
tests/test_ch_api.py's stand-in respawner runs on it.

Which daemon a path is (the C one from QEMU or the Rust one, and its version) is
read from its own ``--version``, not guessed from the path: a path may be a wrapper
script, and the two spell their flags differently.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import re
import shutil
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from healer.errors import InputError
from healer.supervise.capture import run_captured
from healer.supervise.held import HeldSocket

__all__ = [
    "DaemonInfo",
    "ExitStatus",
    "SupervisedVirtiofsd",
    "children",
    "command_line",
    "exists",
    "find_daemon",
    "find_virtiofsd",
    "hidden_readiness",
    "installed_daemons",
    "probe_virtiofsd",
    "program_index",
    "running_daemon",
    "virtiofsd_argv",
]

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
# Where distributions put it: Debian 13's Rust daemon, then QEMU's C daemon (Debian 12).
_CANDIDATES = ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd")
PROBE_TIMEOUT_S = 5.0
# `virtiofsd --version`, first line: C "virtiofsd version 7.2.22 (Debian ...)",
# Rust "virtiofsd 1.13.2".
_VERSION = re.compile(r"virtiofsd (?:(?P<c>version) )?(?P<version>\d+(?:\.\d+)+)\b")
# Options of glibc's ld.so that take a value (a daemon run through its loader).
_LOADER_VALUE_OPTIONS = frozenset(
    {"--library-path", "--preload", "--argv0", "--audit", "--inhibit-rpath",
     "--glibc-hwcaps-prepend", "--glibc-hwcaps-mask"}
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How a virtiofsd ended: an exit code, or the signal that killed it."""

    code: int | None
    signal: str | None

    @classmethod
    def from_returncode(cls, returncode: int) -> ExitStatus:
        if returncode < 0:
            return cls(None, signal.Signals(-returncode).name)
        return cls(returncode, None)


@dataclass(frozen=True, slots=True)
class DaemonInfo:
    """A virtiofsd as its own ``--version`` names it: ``c`` or ``rust``, and the version.

    ``path`` is what runs it (the binary, or a wrapper that execs it).
    """

    path: str
    implementation: str
    version: str

    @property
    def id(self) -> str:
        """``c-7.2``, ``rust-1.13``: the implementation and the release (major.minor)."""
        return f"{self.implementation}-{'.'.join(self.version.split('.')[:2])}"

    def argv(self, *, shared_dir: str, extra: Sequence[str] = ()) -> list[str]:
        """The argv for a held socket, in this daemon's own spelling."""
        return virtiofsd_argv(self.path, self.implementation, shared_dir=shared_dir, extra=extra)


_PROBED: dict[tuple[tuple[str, ...], int, int], tuple[str, str] | None] = {}
_PROBED_LOCK = threading.Lock()
_PROBE_OUTPUT = 4096  # a version line; more is not a virtiofsd


def _probe(command: Sequence[str], timeout_s: float) -> tuple[str, str] | None:
    """(implementation, version) from ``COMMAND --version``; cached per command and file.

    The cache key includes the file's inode and mtime, so a daemon upgraded in place
    is asked again; a run that fails, hangs past ``timeout_s`` or prints something else
    names nothing.
    """
    try:
        st = Path(command[0]).stat()
    except OSError:
        return None
    key = (tuple(command), st.st_ino, st.st_mtime_ns)
    with _PROBED_LOCK:
        if key in _PROBED:
            return _PROBED[key]
    try:
        done = run_captured([*command, "--version"], timeout_s=timeout_s, max_bytes=_PROBE_OUTPUT)
    except (OSError, subprocess.SubprocessError):
        return None  # not cached: a hang or a missing loader may be passing
    text = (done.stdout + b"\n" + done.stderr).decode("utf-8", "replace").strip()
    m = _VERSION.match(text)
    found = ("c" if m["c"] else "rust", m["version"]) if m else None
    with _PROBED_LOCK:
        _PROBED[key] = found
    return found


def probe_virtiofsd(path: str, *, timeout_s: float = PROBE_TIMEOUT_S) -> DaemonInfo | None:
    """Which virtiofsd ``path`` runs, from ``path --version``; None if it names none."""
    found = _probe([path], timeout_s)
    return DaemonInfo(path, *found) if found else None


def installed_daemons(*, timeout_s: float = PROBE_TIMEOUT_S) -> list[DaemonInfo]:
    """Every virtiofsd found, ``HEALER_VIRTIOFSD`` first, then where distributions put
    it, then ``PATH``; each identified by its ``--version``, duplicates left out.

    An override that does not answer ``--version`` as virtiofsd does is an error, not
    a reason to run something else quietly.
    """
    override = os.environ.get("HEALER_VIRTIOFSD")
    paths = [*_CANDIDATES, shutil.which("virtiofsd") or ""]
    found: list[DaemonInfo] = []
    if override:
        info = probe_virtiofsd(override, timeout_s=timeout_s)
        if info is None:
            raise InputError(
                override,
                "named by HEALER_VIRTIOFSD, does not answer --version as virtiofsd does",
                "name a virtiofsd, or a wrapper that execs one with its arguments",
            )
        found.append(info)
    seen = {os.path.realpath(info.path) for info in found}
    for path in paths:
        if not path or os.path.realpath(path) in seen or not os.access(path, os.X_OK):
            continue
        seen.add(os.path.realpath(path))
        if (info := probe_virtiofsd(path, timeout_s=timeout_s)) is not None:
            found.append(info)
    return found


def find_daemon() -> DaemonInfo | None:
    """The virtiofsd healer runs by default (see :func:`installed_daemons`), if any."""
    found = installed_daemons()
    return found[0] if found else None


def find_virtiofsd() -> tuple[str, str] | None:
    """The default virtiofsd's path and implementation (``rust`` or ``c``), if any."""
    info = find_daemon()
    return (info.path, info.implementation) if info else None


def command_line(pid: int) -> list[str] | None:
    """The argv of a running process (None if it is gone or has none: a kernel thread)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return None
    argv = [os.fsdecode(a) for a in raw.split(b"\0")[:-1]]
    return argv or None


def program_index(argv: Sequence[str]) -> int:
    """Where the program is in an argv: 0, or past a dynamic loader and its options.

    A daemon run through its release's loader (``ld-linux-x86-64.so.2 --library-path
    DIR /usr/libexec/virtiofsd ...``) has the loader as argv[0] and /proc/PID/exe.
    """
    if not argv or not Path(argv[0]).name.startswith("ld-"):
        return 0
    i = 1
    while i < len(argv) and argv[i].startswith("--"):
        i += 2 if argv[i] in _LOADER_VALUE_OPTIONS else 1
    return min(i, len(argv) - 1)


def running_daemon(pid: int, *, timeout_s: float = PROBE_TIMEOUT_S) -> DaemonInfo | None:
    """Which virtiofsd process ``pid`` runs: its command (through a loader, if any) asked
    for ``--version``. ``path`` is the program itself."""
    argv = command_line(pid)
    if argv is None:
        return None
    end = program_index(argv) + 1
    found = _probe(argv[:end], timeout_s)
    return DaemonInfo(argv[end - 1], *found) if found else None


def _option_values(argv: Sequence[str], name: str) -> list[str]:
    """The values of ``name`` in an argv, spelt ``NAME VALUE`` or ``NAME=VALUE``."""
    values = []
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            values.append(argv[i + 1])
        elif arg.startswith(name + "="):
            values.append(arg[len(name) + 1 :])
    return values


def hidden_readiness(argv: Sequence[str]) -> list[str]:
    """What in a virtiofsd argv hides the stderr lines healer reads, and what to use.

    healer learns that a daemon listens, got its client and lost it from info lines
    on stderr: ``--syslog`` sends them elsewhere (and, with no /dev/log, the C daemon
    dies at its first log line); Rust ``--log-level warn|error|off`` and C ``-o
    log_level=warn|err`` drop them. Each problem names the option and the fix.
    """
    problems = []
    if "--syslog" in argv:
        problems.append(
            "--syslog sends the readiness lines away from stderr: leave it out "
            "(share.log keeps a copy of stderr)"
        )
    for level in _option_values(argv, "--log-level"):
        if level.strip().lower() in {"warn", "error", "off"}:
            problems.append(f"--log-level {level} hides the readiness lines: use --log-level info")
    compat = _option_values(argv, "-o") + [
        a[2:] for a in argv if a.startswith("-o") and a[2:3] > "="
    ]
    for options in compat:
        for option in options.split(","):
            key, _, level = option.partition("=")
            if key.strip() == "log_level" and level.strip().lower() in {"warn", "err", "error"}:
                problems.append(
                    f"-o log_level={level} hides the readiness lines: use log_level=info"
                )
    return problems


def virtiofsd_argv(
    binary: str, implementation: str, *, shared_dir: str, extra: Sequence[str] = ()
) -> list[str]:
    """The argv for a held socket; the two daemons spell the flags differently."""
    if implementation == "c":
        return [binary, "--fd={fd}", "-o", f"source={shared_dir}", *extra]
    return [binary, "--fd", "{fd}", "--shared-dir", shared_dir, *extra]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class SupervisedVirtiofsd:
    """A virtiofsd as this process's child on a held socket: started, watched, stopped
    (test support only; see the module docstring).

    ``on_line`` receives each stderr line (without newline, cut at ``max_line``);
    the last ``keep_lines`` are kept for the exit report.
    """

    def __init__(
        self,
        argv: Sequence[str],
        held: HeldSocket,
        *,
        on_line: Callable[[bytes], object] | None = None,
        keep_lines: int = 20,
        max_line: int = 1 << 16,
    ) -> None:
        if not argv or "{fd}" not in "".join(argv):
            msg = "the virtiofsd argv must pass the held socket as {fd} (e.g. --fd={fd})"
            raise ValueError(msg)
        self.argv = list(argv)
        self.held = held
        self.on_line = on_line
        self.max_line = max_line
        self.last_lines: deque[bytes] = deque(maxlen=keep_lines)
        self.starts = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> int:
        """Spawn virtiofsd on the held socket; return its pid."""
        if self.proc is not None and self.proc.poll() is None:
            msg = f"virtiofsd {self.proc.pid} is still running"
            raise RuntimeError(msg)
        self.last_lines.clear()  # the exit report is about one run
        fd = self.held.fileno()
        argv = [arg.replace("{fd}", str(fd)) for arg in self.argv]
        self.proc = subprocess.Popen(
            argv,
            pass_fds=(fd,),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - only prctl, before exec
        )
        self.starts += 1
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        return self.proc.pid

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None  # noqa: S101 - Popen was given stderr=PIPE
        with proc.stderr:
            while line := proc.stderr.readline(self.max_line):
                line = line.rstrip(b"\n")
                self.last_lines.append(line)
                if self.on_line is not None:
                    self.on_line(line)

    def drain(self, *, timeout_s: float) -> None:
        """Wait (bounded) until the stderr reader has passed on every line."""
        if self._reader is not None:
            self._reader.join(timeout=timeout_s)

    def poll(self) -> ExitStatus | None:
        """The exit status if it has exited, else None; never blocks."""
        if self.proc is None or self.proc.poll() is None:
            return None
        return ExitStatus.from_returncode(self.proc.returncode)

    def wait(self, timeout_s: float) -> ExitStatus | None:
        """Wait up to ``timeout_s`` for the exit; None if it still runs."""
        if self.proc is None:
            return None
        try:
            returncode = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return None
        if self._reader is not None:
            self._reader.join(timeout=1.0)
        return ExitStatus.from_returncode(returncode)

    def stop(self, *, grace_s: float = 2.0) -> ExitStatus | None:
        """SIGTERM, then SIGKILL after ``grace_s``; returns how it ended."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            if self.wait(grace_s) is None:
                self.proc.kill()
        return self.wait(grace_s)


def children(pid: int) -> list[int]:
    """The pids ``pid`` started that still run (its threads' ``children`` lists)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except (FileNotFoundError, ProcessLookupError):
        return found
    for task in tasks:
        try:
            found += [int(p) for p in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread ended while we looked
    return found


def exists(pid: int) -> bool:
    """Whether a process with this pid exists (zombies count as gone).

    A process reaped between opening its stat file and reading it makes the read
    fail with ESRCH: that, too, means it is gone.
    """
    try:
        status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return status != "Z"
