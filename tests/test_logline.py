"""healer's own log lines: a priority prefix for journald when stderr is the journal
(JOURNAL_STREAM names it), an RFC 3339 time, name and pid otherwise; levels from
``[healer] log_level``. Expected lines written by hand. Read back through a real
journald: tests/test_systemd_units.py."""

from __future__ import annotations

import logging
import os
import re
import signal
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import wait_for
from watching import (
    everything_stopped,
    holder_directory,
    kill_serving_daemon,
    start_watch,
    write_setup,
)

from healer.engine.model import Action, Cause, Decision
from healer.logline import configure, format_line, journal_is
from healer.observe import LoggingObserver
from healer.supervise import DaemonInfo

AT = datetime(2026, 12, 4, 10, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root, healer = logging.getLogger(), logging.getLogger("healer")
    handlers, levels = list(root.handlers), (root.level, healer.level)
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(levels[0])
    healer.setLevel(levels[1])


def stream_id(path: Path) -> str:
    info = path.stat()
    return f"{info.st_dev}:{info.st_ino}"


@pytest.mark.parametrize(
    ("level", "journald", "line"),
    [
        (logging.INFO, False, "2026-12-04T10:00:00.123Z healer[42]: INFO share fs0: decided"),
        (logging.WARNING, False, "2026-12-04T10:00:00.123Z healer[42]: WARNING share fs0: decided"),
        (logging.INFO, True, "<6>share fs0: decided"),
        (logging.WARNING, True, "<4>share fs0: decided"),
        (logging.ERROR, True, "<3>share fs0: decided"),
        (logging.CRITICAL, True, "<2>share fs0: decided"),
        (logging.DEBUG, True, "<7>share fs0: decided"),
    ],
)
def test_a_line_for_people_or_for_journald(level: int, journald: bool, line: str) -> None:
    text = "share fs0: decided"
    assert format_line(level, text, name="healer", pid=42, journald=journald, at=AT) == line


def test_a_multi_line_text_stays_one_line() -> None:
    line = format_line(logging.ERROR, "a\nb", name="healer", pid=1, journald=True, at=AT)
    assert line == "<3>a | b"


def test_the_journal_is_the_stream_journal_stream_names(tmp_path: Path) -> None:
    path = tmp_path / "stderr"
    other = tmp_path / "other"
    other.touch()
    with path.open("w") as stream:
        assert journal_is(stream, {"JOURNAL_STREAM": stream_id(path)})
        assert not journal_is(stream, {"JOURNAL_STREAM": stream_id(other)})  # redirected
        assert not journal_is(stream, {})
        assert not journal_is(stream, {"JOURNAL_STREAM": "garbage"})


def test_configure_writes_journald_lines_at_the_configured_level(
    tmp_path: Path, restore_logging: None
) -> None:
    path = tmp_path / "stderr"
    with path.open("w") as stream:
        configure("warning", stream=stream, environ={"JOURNAL_STREAM": stream_id(path)})
        log = logging.getLogger("healer.live.loop")
        log.info("not shown at warning")
        log.warning("share fs0: virtiofsd 7 exited (killed by SIGKILL)")
        logging.getLogger("watchfiles.main").info("a library's info: not shown")
    assert path.read_text() == "<4>share fs0: virtiofsd 7 exited (killed by SIGKILL)\n"


def test_configure_elsewhere_stamps_each_line(tmp_path: Path, restore_logging: None) -> None:
    path = tmp_path / "stderr"
    with path.open("w") as stream:
        configure("info", stream=stream, environ={})
        logging.getLogger("healer").info("started")
    (line,) = path.read_text().splitlines()
    stamp, rest = line.split(" ", 1)
    assert rest == f"healer[{os.getpid()}]: INFO started"
    assert stamp.endswith("Z")
    assert datetime.fromisoformat(stamp).utcoffset() is not None  # RFC 3339, UTC


def test_a_kill_under_healer_watch_is_logged_as_an_operator_reads_it(
    tmp_path: Path, virtiofsd: DaemonInfo
) -> None:
    """The real virtiofsd killed under `healer watch`, stderr to a file (not the
    journal): a start line with the digests and each share, the exit (a warning) with
    what the daemon said last, the decision with its rule and cause, its outcome, the
    stop; every line stamped. 2,000 lines of a tailed log print nothing of their own."""
    setup = write_setup(tmp_path)
    noise = tmp_path / "noise.log"
    noise.write_text("")
    config = setup / "healer.toml"
    config.write_text(config.read_text() + f'\n[[source]]\npath = "{noise}"\n')
    log = tmp_path / "healer.log"
    watch = start_watch(config, log)
    with everything_stopped(config):
        try:
            wait_for(lambda: "started healer" in log.read_text())
            with noise.open("a") as out:
                out.writelines(f"line {n} that no parser knows\n" for n in range(2000))
            if virtiofsd.implementation == "rust":  # killed only once it has said it
                spool = holder_directory(config) / "stderr" / "fs0.1.log"
                wait_for(lambda: spool.exists() and b"Waiting for vhost-user" in spool.read_bytes())
            killed = kill_serving_daemon(config)
            wait_for(lambda: "respawn_virtiofsd succeeded" in log.read_text())
        finally:
            watch.send_signal(signal.SIGTERM)
            assert watch.wait(30) == 0
    lines = log.read_text().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z healer\[\d+\]: "
    assert all(re.match(stamp + r"(INFO|WARNING|ERROR) ", line) for line in lines), lines
    said = [re.sub(stamp, "", line) for line in lines]
    start = next(line for line in said if "started healer" in line)
    assert re.search(r"config \S+ \(digest [0-9a-f]{16}\), rules [0-9a-f]{16}", start), start
    assert re.search(r"fs0 started pid \d+ \(generation 1\)", start), start
    assert f"WARNING share fs0: virtiofsd {killed} for share fs0 exited (killed by SIGKILL)" in said
    if virtiofsd.implementation == "rust":  # the C daemon says nothing before --fd serves
        assert any("virtiofsd said: " in line and "Waiting for vhost-user" in line for line in said)
    assert any(
        line.startswith("INFO share fs0: decided respawn_virtiofsd (rule respawn-on-exit, on ")
        for line in said
    ), said
    assert any(line.startswith("INFO share fs0: respawn_virtiofsd succeeded in ") for line in said)
    assert said[-1].startswith("INFO stopped;")
    assert len(lines) < 40  # one line per thing that happened, none per line read


def test_a_flood_of_suppressed_decisions_is_told_once(caplog: pytest.LogCaptureFixture) -> None:
    """1,000 decisions suppressed for the same reason: one info line, the rest debug."""
    observer = LoggingObserver(logging.getLogger("healer.test"))
    cause = Cause("GuestMountFailed", "console", 1, 0, 0.0)
    with caplog.at_level(logging.DEBUG, logger="healer.test"):
        for n in range(1000):
            observer.decision(
                Decision(f"fs0#1/remount_guest/{n}", 0.0, 0.0, "fs0", "fs0#1",
                         Action.REMOUNT, "guest-mount", cause, suppressed="rate limit of source console")
            )  # fmt: skip
    levels = [r.levelno for r in caplog.records]
    assert levels.count(logging.INFO) == 1
    assert levels.count(logging.DEBUG) == 999
