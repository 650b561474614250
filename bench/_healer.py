"""What the live benchmarks share: a ``healer watch`` run for the length of a block
(with its holder, which runs the daemons), and the ``[healer]`` lines of a watcher
setting."""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "add_peer_arguments",
    "healer_stop",
    "healer_watch",
    "sec_is_missing",
    "watcher_label",
    "watcher_lines",
]


@contextmanager
def healer_watch(
    config: Path, ready: Callable[[], bool], *, limit_s: float = 60.0
) -> Iterator[subprocess.Popen[bytes]]:
    """``healer watch --config CONFIG`` until the block ends, once ``ready()``; then SIGTERM
    (the brain) and ``healer stop`` (the holder, its daemons and sockets outlive it)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "healer", "watch", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + limit_s
        while not ready():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("healer watch did not start")
            time.sleep(0.01)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=limit_s)
        healer_stop(config, limit_s=limit_s)


def healer_stop(config: Path, *, limit_s: float) -> None:
    """``healer stop --config CONFIG``: the brain if it runs, the holder, its daemons and
    sockets (its output is not read)."""
    subprocess.run(
        [sys.executable, "-m", "healer", "stop", "--config", str(config)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=limit_s,
        check=False,
    )


def watcher_lines(notify: str) -> str:
    """``[healer]`` lines for ``notify``: "inotify", or a watchfiles step in ms."""
    if notify == "inotify":
        return 'notify = "inotify"\n'
    return f'notify = "watchfiles"\nnotify_step_ms = {int(notify)}\n'


def watcher_label(notify: str) -> str:
    return 'notify = "inotify"' if notify == "inotify" else f"watchfiles, step {notify} ms"


def add_peer_arguments(parser: argparse.ArgumentParser, notify: list[str]) -> None:
    """``--notify`` (healer's watchers to run) and ``--sec-poll`` (SEC's, same run)."""
    parser.add_argument(
        "--notify", nargs="+", default=notify,
        help='healer watchers: "inotify", or watchfiles steps in ms',
    )  # fmt: skip
    parser.add_argument(
        "--sec-poll", type=float, nargs="*", default=[0.1, 0.01], help="SEC --poll-timeout values"
    )


def sec_is_missing(polls: list[float]) -> bool:
    """True (and says so) when SEC runs are asked for and SEC is not installed."""
    if polls and shutil.which("sec") is None:
        print("sec is not installed: apt-get install sec (or pass --sec-poll with no values)")
        return True
    return False
