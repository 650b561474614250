"""Run a short command and keep a bounded amount of what it prints.

``subprocess.run(capture_output=True)`` keeps everything: a ch-remote, an ssh into the
guest or a ``--version`` probe that prints without end would fill healer's memory
before its timeout. Here each stream keeps at most ``max_bytes`` (the rest is read and
thrown away, so the child never blocks on a full pipe) and says it was cut.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import IO

__all__ = ["MAX_OUTPUT", "Captured", "run_captured"]

MAX_OUTPUT = 1 << 20
"""Per stream: far above any answer these commands give (a ``vm.info`` is a few KiB)."""
_STEP = 64 * 1024


@dataclass(frozen=True, slots=True)
class Captured:
    """A finished command: its exit status and the first ``max_bytes`` of each stream."""

    returncode: int
    stdout: bytes
    stderr: bytes
    stdout_cut: bool = False
    stderr_cut: bool = False


def run_captured(
    argv: Sequence[str],
    *,
    timeout_s: float,
    stdin: bytes = b"",
    max_bytes: int = MAX_OUTPUT,
    env: Mapping[str, str] | None = None,
) -> Captured:
    """Run ``argv`` (no shell) to its end, in ``env`` (default: healer's own); raises
    ``subprocess.TimeoutExpired`` (the child killed and reaped) after ``timeout_s``,
    ``OSError`` when it cannot start."""
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=None if env is None else dict(env),
    )
    feed, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
    if feed is None or stdout is None or stderr is None:  # Popen opened all three
        raise OSError("the child's pipes were not opened")
    into, out, err = feed.fileno(), stdout.fileno(), stderr.fileno()
    kept = {out: bytearray(), err: bytearray()}
    cut = dict.fromkeys(kept, False)
    pending = memoryview(stdin)
    deadline = time.monotonic() + timeout_s
    with selectors.DefaultSelector() as selector:
        for fd in kept:
            selector.register(fd, selectors.EVENT_READ)
        if pending:
            os.set_blocking(into, False)
            selector.register(into, selectors.EVENT_WRITE)
        else:
            feed.close()
        try:
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired(list(argv), timeout_s)
                for key, _ in selector.select(left):
                    if key.fd == into:
                        pending = _feed(feed, selector, pending)
                        continue
                    chunk = os.read(key.fd, _STEP)
                    if not chunk:
                        selector.unregister(key.fd)
                        continue
                    room = max_bytes - len(kept[key.fd])
                    kept[key.fd] += chunk[:room]
                    cut[key.fd] = cut[key.fd] or len(chunk) > room
            returncode = proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            for stream in (feed, stdout, stderr):
                stream.close()
    return Captured(returncode, bytes(kept[out]), bytes(kept[err]), cut[out], cut[err])


def _feed(feed: IO[bytes], selector: selectors.BaseSelector, data: memoryview) -> memoryview:
    """Write what the child's stdin takes now; close it when all is written (or the
    child closed its end)."""
    fd = feed.fileno()
    try:
        data = data[os.write(fd, data) :]
    except BrokenPipeError:
        data = data[len(data) :]
    if not data:
        selector.unregister(fd)
        feed.close()
    return data
