"""Run virtiofsd on a held socket, see it exit at once, and stop it cleanly.

The argv is built from configuration only; ``{fd}`` is the one placeholder, filled
with the held socket's descriptor number. No shell is involved. The child gets a
parent-death signal, so a healer killed with -9 leaves no virtiofsd behind.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from healer.supervise.held import HeldSocket

__all__ = [
    "ExitStatus",
    "SupervisedVirtiofsd",
    "children",
    "exists",
    "find_virtiofsd",
    "virtiofsd_argv",
]

_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
# Where distributions put it: Debian 13's Rust daemon, then QEMU's C daemon (Debian 12).
_CANDIDATES = (("/usr/libexec/virtiofsd", "rust"), ("/usr/lib/qemu/virtiofsd", "c"))


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


def find_virtiofsd() -> tuple[str, str] | None:
    """The installed virtiofsd and its implementation (``rust`` or ``c``), if any."""
    override = os.environ.get("HEALER_VIRTIOFSD")
    if override:
        return override, "c" if "/qemu/" in override else "rust"
    for path, implementation in _CANDIDATES:
        if os.access(path, os.X_OK):
            return path, implementation
    found = shutil.which("virtiofsd")
    return (found, "rust") if found else None


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
    """One share's virtiofsd: started on the held socket, watched, stopped.

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
