"""A real systemd for tests: systemd as PID 1 of a systemd-nspawn container.

The container's root is a fresh directory (under a pytest tmp dir): the host's /usr bound
read-only, a copy of /etc whose /etc/systemd/system holds nothing but an empty default
target, its own /var, and /tmp and /run that nspawn mounts as tmpfs. The checkout is bound
read-write at its own path and the Python prefixes the venv needs (its base interpreter,
for example under ~/.pyenv) read-only at theirs, so ``<checkout>/.venv/bin/python`` runs
inside unchanged. Units are written to the container's /etc/systemd/system; commands run
inside through ``nsenter`` into the container's init. The container's paths (its /run) are
reached from the host through ``/proc/<init pid>/root``.

Never boot systemd over the host's own root instead: its sysinit empties /tmp and applies
sysctl settings to the machine. Here sysinit runs inside the container only.

Nothing leaks: the fixture's cleanup kills the container's init by pid (the kernel then
ends every process of its pid namespace) and reaps nspawn; nspawn itself gets SIGTERM (an
orderly poweroff of the container) should the test process die first; and the directory
is removed only when nothing is mounted under it. Every wait is bounded; nothing asserts
a time. Needs root and Debian's systemd-container (scripts/test installs it).

Run as a script, this module is the step between ``unshare`` and ``systemd-nspawn`` (see
`_exec_nspawn`), so that no shell is needed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import pytest

__all__ = ["CHECKOUT", "Container", "RigError", "booted", "missing", "require"]

CHECKOUT = Path(__file__).resolve().parents[1]

BOOT_LIMIT_S = 60.0  # a bound for the boot to reach "running", not a target
COMMAND_LIMIT_S = 60.0  # a bound for one command inside the container
STOP_LIMIT_S = 30.0

# nspawn keeps state under /run/systemd/nspawn and cannot clean it up on a disk file system
# (this host's /run is one); it gets a tmpfs there in a private mount namespace of its own.
NSPAWN_STATE = Path("/run/systemd/nspawn")

CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
    "SYSTEMD_PAGER": "",
    "SYSTEMD_COLORS": "0",
    "TERM": "dumb",
}

BARE_TARGET = """\
[Unit]
Description=nothing but what a test starts
AllowIsolate=yes
"""


class RigError(Exception):
    """The container did not do what the rig asked, with what it printed."""


def missing() -> str | None:
    """What the rig cannot run without, as an install hint; None when all is there."""
    if os.geteuid() != 0:
        return "root (systemd-nspawn boots a container)"
    for tool, package in (
        ("systemd-nspawn", "systemd-container"),
        ("nsenter", "util-linux"),
        ("unshare", "util-linux"),
    ):
        if shutil.which(tool) is None:
            return f"{tool} (apt-get install {package})"
    return None


def require() -> None:
    """Skips the test without the rig's tools; under CI=true fails it (no silent skips)."""
    lacking = missing()
    if lacking is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the systemd tests need {lacking} in CI (scripts/test installs it)")
        pytest.skip(f"needs {lacking}; scripts/test installs it")


def python_binds() -> list[Path]:
    """The prefixes this interpreter needs that the container lacks (not under /usr, nor
    the checkout): the venv (when outside the checkout) and its base interpreter, which
    the venv's pyvenv.cfg ``home`` names and ``sys.base_prefix`` is."""
    wanted = [Path(sys.prefix), Path(sys.base_prefix), Path(sys.executable).resolve().parents[1]]
    binds: list[Path] = []
    for path in (p.resolve() for p in wanted):
        covered = [Path("/usr"), CHECKOUT, *binds]
        if not any(path == c or path.is_relative_to(c) for c in covered):
            binds = [b for b in binds if not b.is_relative_to(path)] + [path]
    return binds


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below ``path`` in this process's mount namespace."""
    root = str(path.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), line.split(" ")[4])
        if point == root or point.startswith(root + "/"):
            found.append(point)
    return found


def tool(name: str) -> str:
    """The absolute path of a host program (commands are started by full path)."""
    found = shutil.which(name)
    if found is None:
        raise RigError(f"{name} not found on PATH")
    return found


def _pid_namespace(pid: int) -> str | None:
    try:
        return str(Path(f"/proc/{pid}/ns/pid").readlink())
    except OSError:
        return None


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])


def _wait(condition: Callable[[], object], what: str, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise RigError(f"{what}: not within {limit_s} s")
        time.sleep(0.02)


class Container:
    """One booted systemd; see the module docstring. Use `booted` (or `boot` and `stop`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.console = root.with_name(root.name + ".console")
        self.process: subprocess.Popen[bytes] | None = None
        self.init_pid = 0
        self.pid_namespace: str | None = None
        self.boot_seconds = 0.0
        self._created = False
        self._stopped = False

    # --- life cycle -------------------------------------------------------------------

    @classmethod
    def boot(
        cls,
        root: Path,
        *,
        binds: Sequence[Path] = (),
        binds_ro: Sequence[Path] = (),
        limit_s: float = BOOT_LIMIT_S,
    ) -> Container:
        """Boots a container rooted at ``root`` (which must not exist yet) and waits until
        systemd reports ``running``. ``binds`` and ``binds_ro`` are host paths bound at the
        same path (the checkout and the Python prefixes always are)."""
        container = cls(root)
        started = time.monotonic()
        try:
            container._prepare()
            container._start([CHECKOUT, *binds], [*python_binds(), *binds_ro])
            container._wait_running(limit_s)
        except BaseException:
            container.stop()
            raise
        container.boot_seconds = time.monotonic() - started
        return container

    def _prepare(self) -> None:
        """The root: symlinks into the bound /usr, a copy of /etc without the host's units."""
        root = self.root
        if root.exists():
            raise RigError(f"{root} exists; a container needs a fresh directory")
        root.mkdir(parents=True)
        self._created = True
        for name in ("usr/lib", "etc", "var", "run", "dev", "proc", "sys"):
            (root / name).mkdir(parents=True, exist_ok=True)
        (root / "tmp").mkdir(mode=0o1777)
        (root / "tmp").chmod(0o1777)
        (root / "root").mkdir(mode=0o700)
        for name in ("bin", "sbin", "lib", "lib64"):
            if Path("/", name).is_symlink() or not Path("/", name).exists():
                (root / name).symlink_to(f"usr/{name}")
        # cp -a keeps special files, owners and links as they are (copytree would not)
        subprocess.run(
            [tool("cp"), "-a", "/etc/.", str(root / "etc")], check=True, timeout=COMMAND_LIMIT_S
        )
        # nspawn looks for os-release in the root before it binds /usr
        shutil.copy2("/usr/lib/os-release", root / "usr/lib/os-release")
        (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
        units = root / "etc/systemd/system"
        shutil.rmtree(units, ignore_errors=True)
        units.mkdir(parents=True)
        (units / "bare.target").write_text(BARE_TARGET)
        (units / "default.target").symlink_to("/etc/systemd/system/bare.target")

    def _start(self, binds: Sequence[Path], binds_ro: Sequence[Path]) -> None:
        argv = [
            "-D",
            str(self.root),
            "--bind-ro=/usr",
            "--register=no",
            "--keep-unit",
            "--private-network",
            "--console=read-only",
            "-q",
            "--boot",
        ]
        for flag, paths in (("--bind", binds), ("--bind-ro", binds_ro)):
            for path in paths:
                if ":" in str(path):
                    raise RigError(f"cannot bind {path}: nspawn separates with ':'")
                argv.append(f"{flag}={path}")
        with self.console.open("wb") as console:
            self.process = subprocess.Popen(
                [
                    *(tool("unshare"), "--mount", "--propagation", "private"),
                    *(sys.executable, str(Path(__file__).resolve()), str(os.getpid())),
                    *argv,
                ],
                stdin=subprocess.DEVNULL,
                stdout=console,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the test run is for pytest, not for it
            )
        # unshare and the helper exec in turn: the process started is systemd-nspawn, and
        # the container's init is its child in another pid namespace
        _wait(self._find_init, f"the container's init (see {self.console})", BOOT_LIMIT_S)

    def _find_init(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RigError(f"systemd-nspawn exited {self.process.returncode}: {self._tail()}")
        nspawn = self.process.pid
        own = _pid_namespace(nspawn)
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and _parent(int(entry.name)) == nspawn:
                namespace = _pid_namespace(int(entry.name))
                if namespace is not None and namespace != own:
                    self.init_pid, self.pid_namespace = int(entry.name), namespace
                    return True
        return False

    def _wait_running(self, limit_s: float) -> None:
        state = ""

        def running() -> bool:
            nonlocal state
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            return state in ("running", "degraded")

        try:
            _wait(running, "systemd reaching running", limit_s)
        except RigError as exc:
            raise RigError(f"{exc} (last state {state!r}): {self._tail()}") from None

    def stop(self) -> None:
        """Kills the container by its init's pid, reaps nspawn, then `remove`; safe to call
        again (it only retries the removal)."""
        if not self._stopped:
            self._stopped = True
            self._kill()
        self.remove()

    def _kill(self) -> None:
        process = self.process
        if self.init_alive():
            os.kill(self.init_pid, signal.SIGKILL)  # the kernel ends its whole pid namespace
        if process is not None and process.poll() is None:
            try:
                process.wait(timeout=STOP_LIMIT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_LIMIT_S)
        with contextlib.suppress(RigError):  # an init another parent has yet to reap
            _wait(lambda: not self.init_alive(), "the container's init to end", STOP_LIMIT_S)

    def remove(self) -> None:
        """Removes the root the rig made, refusing while the container lives or anything is
        mounted under it (a bind of the checkout would otherwise be emptied with it)."""
        if not self._created or not self.root.exists():
            return
        if self.init_alive():
            raise RigError(f"the container's init {self.init_pid} is still alive; not removing")
        mounted = mounts_under(self.root)
        if mounted:
            raise RigError(f"still mounted under {self.root}: {mounted}; not removing it")
        shutil.rmtree(self.root)
        with contextlib.suppress(FileNotFoundError):
            self.root.with_name(f".#{self.root.name}.lck").unlink()  # nspawn's image lock

    def init_alive(self) -> bool:
        """The init we booted is still there (a pid alone could have been reused)."""
        return self.init_pid > 0 and _pid_namespace(self.init_pid) == self.pid_namespace

    def _tail(self, lines: int = 30) -> str:
        try:
            text = self.console.read_text(errors="replace")
        except OSError:
            return "(no console output)"
        return "\n".join(text.splitlines()[-lines:])

    # --- inside -----------------------------------------------------------------------

    def run(
        self,
        *argv: str,
        check: bool = True,
        limit_s: float = COMMAND_LIMIT_S,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Runs ``argv`` inside the container (all its namespaces, its root), with a clean
        environment; raises RigError with the output when ``check`` and it fails."""
        if not self.init_alive():
            raise RigError("the container is not running")
        done = subprocess.run(
            [tool("nsenter"), "-t", str(self.init_pid), "-a", *argv],
            env=CLEAN_ENV,
            input=input,
            capture_output=True,
            text=True,
            timeout=limit_s,
            check=False,
        )
        if check and done.returncode != 0:
            raise RigError(
                f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        return done

    def systemctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``systemctl ARGS`` inside, without a pager."""
        return self.run("systemctl", "--no-pager", *args, check=check)

    def write_unit(self, name: str, text: str, *, reload: bool = True) -> Path:
        """Writes ``/etc/systemd/system/NAME`` in the container and (by default) reloads."""
        path = self.root / "etc/systemd/system" / name
        path.write_text(text)
        if reload:
            self.daemon_reload()
        return path

    def daemon_reload(self) -> None:
        self.systemctl("daemon-reload")

    def start(self, unit: str) -> None:
        """Starts ``unit``; for Type=notify this returns once it said READY=1."""
        self.systemctl("start", unit)

    def restart(self, unit: str) -> None:
        self.systemctl("restart", unit)

    def reload(self, unit: str) -> None:
        self.systemctl("reload", unit)

    def kill(self, unit: str, signal_name: str = "KILL") -> None:
        """``systemctl kill -s SIGNAL``: every process of the unit, as a crash would be."""
        self.systemctl("kill", "-s", signal_name, unit)

    def status(self, unit: str) -> str:
        """``systemctl status`` as text (it exits non-zero for a unit that is not active)."""
        return self.systemctl("status", "--full", "--lines=20", unit, check=False).stdout

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        """``systemctl show -p ...`` as a dict (all properties without ``properties``)."""
        args = [f"--property={p}" for p in properties]
        out = self.systemctl("show", *args, unit).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def prop(self, unit: str, name: str) -> str:
        return self.show(unit, name)[name]

    def journal(self, unit: str | None = None, *args: str) -> str:
        """``journalctl [-u UNIT]``: the unit's output and what systemd logged about it."""
        select = [] if unit is None else ["-u", unit]
        return self.run(
            "journalctl", "--no-pager", "-q", "-o", "short-monotonic", *select, *args
        ).stdout

    def wait(self, condition: Callable[[], object], what: str, limit_s: float = 30.0) -> None:
        """Polls ``condition`` until true, at most ``limit_s``; raises RigError naming ``what``."""
        _wait(condition, what, limit_s)

    def wait_journal(self, unit: str, text: str, limit_s: float = 30.0) -> str:
        """The unit's journal once it contains ``text`` (journald writes asynchronously)."""
        found = ""

        def seen() -> bool:
            nonlocal found
            found = self.journal(unit)
            return text in found

        try:
            _wait(seen, f"{text!r} in the journal of {unit}", limit_s)
        except RigError as exc:
            raise RigError(f"{exc}:\n{found}") from None
        return found

    def host_path(self, path: str) -> Path:
        """The host's way to a path of the container (its own /run and /tmp included)."""
        return Path(f"/proc/{self.init_pid}/root") / path.lstrip("/")


@contextlib.contextmanager
def booted(
    root: Path, *, binds: Sequence[Path] = (), binds_ro: Sequence[Path] = ()
) -> Iterator[Container]:
    """A running container for the ``with`` block, stopped even when the block fails;
    skips (or under CI=true fails) without systemd-nspawn. For a fixture::

        @pytest.fixture
        def container(tmp_path):
            with booted(tmp_path / "root") as running:
                yield running
    """
    require()
    container = Container.boot(root, binds=binds, binds_ro=binds_ro)
    try:
        yield container
    finally:
        container.stop()


def _exec_nspawn(parent: int, argv: list[str]) -> NoReturn:
    """Between ``unshare --mount`` and systemd-nspawn, in the private mount namespace:
    SIGTERM to nspawn (an orderly poweroff) when the test process dies, a tmpfs for
    nspawn's state, then nspawn itself, in this same process."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    if libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0) != 0:
        sys.exit(f"prctl(PR_SET_PDEATHSIG): {os.strerror(ctypes.get_errno())}")
    if os.getppid() != parent:
        sys.exit("the test process is gone")
    NSPAWN_STATE.mkdir(parents=True, exist_ok=True)
    subprocess.run([tool("mount"), "-t", "tmpfs", "tmpfs", str(NSPAWN_STATE)], check=True)
    nspawn = tool("systemd-nspawn")
    os.execv(nspawn, [nspawn, *argv])  # noqa: S606 - this process becomes nspawn: no shell


if __name__ == "__main__":
    _exec_nspawn(int(sys.argv[1]), sys.argv[2:])
