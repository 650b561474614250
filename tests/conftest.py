"""Shared helpers: the real corpus split into excerpts, and a parser runner."""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from healer.events import Event
from healer.parse import SourceParser
from healer.supervise import DaemonInfo
from healer.supervise.process import installed_daemons, probe_virtiofsd

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = FIXTURES / "corpus"
GOLDEN = Path(__file__).parent / "golden"

# Syslog headers carry no year; these come from the dates in PROVENANCE.md.
EXCERPT_YEARS = {"VR02": 2024, "VC02": 2020, "VC03": 2020, "VC04": 2020, "KA02": 2021}
EXCERPT_YEARS |= {"KA04": 2020, "GU04": 2025, "VR05": 2023}


@dataclass(frozen=True)
class Excerpt:
    """One ``### id:`` block of a corpus file, as bytes."""

    id: str
    file: str
    body: bytes


def load_excerpts() -> list[Excerpt]:
    excerpts = []
    for path in sorted(CORPUS.glob("*.log")):
        data = path.read_bytes()
        for m in re.finditer(rb"^### id: (\w+)\n(.*?)(?=^### source:|\Z)", data, re.M | re.S):
            body = m.group(2).rstrip(b"\n") + b"\n"
            excerpts.append(Excerpt(m.group(1).decode(), path.name, body))
    return excerpts


EXCERPTS = load_excerpts()


def parse(data: bytes, source: str = "test", *, year: int = 2024) -> list[Event]:
    """All events of ``data`` through the fast path."""
    parser = SourceParser(source, default_year=year)
    return [e for e in parser.parse_all(data) if isinstance(e, Event)]


def parse_excerpt(excerpt: Excerpt) -> list[Event]:
    return parse(excerpt.body, excerpt.id, year=EXCERPT_YEARS.get(excerpt.id, 2024))


@pytest.fixture
def excerpts() -> dict[str, Excerpt]:
    return {e.id: e for e in EXCERPTS}


def wait_for(condition: Callable[[], object], limit_s: float = 20.0) -> None:
    """Poll a condition with a bounded wait (no timing is asserted)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached within the bound")
        time.sleep(0.005)


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory under /tmp: Unix socket paths must stay under 108 bytes, and pytest's
    tmp_path can be longer."""
    with tempfile.TemporaryDirectory(prefix="healer", dir="/tmp") as name:
        yield Path(name)


class Reconnector:
    """A VMM's reconnect loop on ``path`` for the length of a ``with`` block: connects
    every 10 ms and counts the tries, the connects accepted and those refused
    (ECONNREFUSED, or ENOENT: no socket)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tries = self.accepted = self.refused = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self.path))
                self.accepted += 1
            except OSError as exc:
                if exc.errno in (errno.ECONNREFUSED, errno.ENOENT):
                    self.refused += 1
            finally:
                sock.close()
                self.tries += 1
            self.stop.wait(0.01)

    def __enter__(self) -> Reconnector:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(5)


DAEMONS = ("c-7.2", "rust-1.13", "rust-1.14")
"""The daemon matrix, by ``DaemonInfo.id``: QEMU's C virtiofsd (Debian 12), the Rust
one of Debian 13 and of sid."""
FETCHED = Path(__file__).resolve().parent.parent / ".cache" / "virtiofsd"
"""Where scripts/fetch-rust-virtiofsd unpacks the daemons this system does not package."""
HOW_TO_GET = {
    "c-7.2": "Debian 12: apt-get install qemu-system-common; Debian 13: scripts/fetch-rust-virtiofsd c-7.2",
    "rust-1.13": "Debian 13: apt-get install virtiofsd; Debian 12: scripts/fetch-rust-virtiofsd rust-1.13",
    "rust-1.14": "scripts/fetch-rust-virtiofsd rust-1.14",
}


def _matrix() -> list[str]:
    """The daemons to run with: all of DAEMONS, or those HEALER_DAEMONS names."""
    named = [d.strip() for d in os.environ.get("HEALER_DAEMONS", "").split(",") if d.strip()]
    unknown = [d for d in named if d not in DAEMONS]
    if unknown:
        msg = f"HEALER_DAEMONS names {', '.join(unknown)}; the matrix is {', '.join(DAEMONS)}"
        raise pytest.UsageError(msg)
    return named or list(DAEMONS)


@functools.cache
def available_daemons() -> dict[str, DaemonInfo]:
    """Each daemon found here, by id, as its own ``--version`` names it: HEALER_VIRTIOFSD
    first, then the installed ones, then those fetched into .cache/virtiofsd/."""
    found: dict[str, DaemonInfo] = {}
    fetched = [probe_virtiofsd(str(w)) for w in sorted(FETCHED.glob("*/virtiofsd"))]
    for info in [*installed_daemons(), *fetched]:
        if info is not None:
            found.setdefault(info.id, info)
    return found


@pytest.fixture(params=_matrix())
def virtiofsd(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> DaemonInfo:
    """The real virtiofsd, once per daemon of the matrix (test ids ``c-7.2``,
    ``rust-1.13``, ``rust-1.14``); ``HEALER_DAEMONS=c-7.2,rust-1.14`` runs only those.

    HEALER_VIRTIOFSD is set to it for the test, so a ``healer watch`` or demo the test
    starts runs this daemon too. A daemon that is not here skips the test with how to
    get it, or fails it under CI=true (no silent skips); scripts/test fetches them all.
    """
    wanted: str = request.param
    found = available_daemons().get(wanted)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"virtiofsd {wanted} is required in CI ({HOW_TO_GET[wanted]})")
        pytest.skip(f"virtiofsd {wanted} is not here ({HOW_TO_GET[wanted]})")
    monkeypatch.setenv("HEALER_VIRTIOFSD", found.path)
    return found


def required_program(program: str, package: str) -> str:
    """An installed program; missing it skips, or fails under CI=true (no silent skips)."""
    found = shutil.which(program)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{program} is required in CI: apt-get install {package}")
        pytest.skip(f"{program} is not installed (apt-get install {package})")
    return found


@pytest.fixture
def promtool() -> str:
    """Prometheus' promtool (Debian package prometheus)."""
    return required_program("promtool", "prometheus")


@pytest.fixture
def prometheus() -> str:
    """The Prometheus server (Debian package prometheus)."""
    return required_program("prometheus", "prometheus")


RUN_MARK = "HEALER_TEST_RUN"
"""The environment variable that marks the processes of one test run (holders too)."""


@pytest.fixture(scope="session", autouse=True)
def this_run() -> Iterator[str]:
    """This run's mark, in the environment every process it starts inherits: another
    test run on the machine (of this checkout too) has holders of its own."""
    mark = f"{os.getpid()}-{time.time_ns()}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(RUN_MARK, mark)
        yield mark


def _holders(run: str) -> set[int]:
    """Running holder processes of this test run (``python -m healer.holder`` run by this
    interpreter, with this run's mark), from /proc."""
    found = set()
    python = os.fsencode(sys.executable)
    mark = os.fsencode(f"{RUN_MARK}={run}")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            if argv[0] != python or b"healer.holder" not in argv[:4]:
                continue
            if mark in (entry / "environ").read_bytes().split(b"\0"):
                found.add(int(entry.name))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module", autouse=True)
def no_holder_left_behind(this_run: str) -> Iterator[None]:
    """Every module stops the holders it started (``healer stop``, or SIGTERM to the
    holder): a holder left running keeps its virtiofsd daemons and sockets. One left is
    stopped here and fails the module, naming it."""
    before = _holders(this_run)
    yield
    left: set[int] = set()

    def stopped() -> bool:
        left.clear()
        left.update(_holders(this_run) - before)
        return not left

    with contextlib.suppress(pytest.fail.Exception):
        wait_for(stopped, 10.0)
    if left:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        pytest.fail(f"holder(s) left running by this module: {sorted(left)}")


def end_child(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server the test started (by its pid): SIGTERM, then SIGKILL after 30 s."""
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=30)
