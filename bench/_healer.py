"""What the live benchmarks share: a ``healer watch`` run for the length of a block,
and the ``[healer]`` lines of a watcher setting."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["healer_watch", "watcher_label", "watcher_lines"]


@contextmanager
def healer_watch(
    config: Path, ready: Callable[[], bool], *, limit_s: float = 60.0
) -> Iterator[subprocess.Popen[bytes]]:
    """``healer watch --config CONFIG`` until the block ends (SIGTERM), once ``ready()``."""
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


def watcher_lines(notify: str) -> str:
    """``[healer]`` lines for ``notify``: "inotify", or a watchfiles step in ms."""
    if notify == "inotify":
        return 'notify = "inotify"\n'
    return f'notify = "watchfiles"\nnotify_step_ms = {int(notify)}\n'


def watcher_label(notify: str) -> str:
    return 'notify = "inotify"' if notify == "inotify" else f"watchfiles, step {notify} ms"
