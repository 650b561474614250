"""When to poll the tailers: file-system notifications with a slow poll as safety net.

:class:`~healer.sources.tail.FileTailer` reads only when polled and never blocks;
this module decides *when*: a watcher on the logs' directories says "now", and a tick
every ``poll_interval_s`` covers missed or coalesced notifications. Two watchers:
inotify read directly (Linux, the default: it sleeps until the kernel reports a
change) and watchfiles (portable, and the fallback: its native loop wakes every
``step_ms``, so latency is bought with wake-ups). Measured in docs/benchmarks.md: p99 5 ms at
0.05 % idle CPU against 45 ms at 0.23 % (step 20) or 14 ms at 0.47 % (step 5).
"""

from __future__ import annotations

import ctypes
import logging
import os
import select
import struct
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["watch_files", "watch_inotify"]

logger = logging.getLogger(__name__)


def watch_files(
    paths: Iterable[str | os.PathLike[str]],
    *,
    stop: threading.Event,
    debounce_ms: int = 100,
    step_ms: int = 20,
    poll_interval_s: float = 1.0,
    force_polling: bool | None = None,
) -> Iterator[set[Path]]:
    """Yield the watched paths that may have changed, and ``set()`` as a poll tick.

    The parent directories are watched (not the files: a rotated or not yet created
    file must still be noticed), non-recursively. A path that is a directory when the
    watch starts stands for every file in it (a change to any of them reports the
    directory). A non-empty set means "poll these
    now"; an empty set, which comes about every ``poll_interval_s`` however busy the
    directory is, means "poll everything": the safety net for missed or coalesced
    notifications, and for files whose directory does not exist yet. The generator
    ends when ``stop`` is set.

    Latency: the native loop wakes every ``step_ms`` and returns the changes it holds
    once a step brings no new distinct change (the changes are a set of (kind, path),
    so a log written continuously does not hold it up), and at the latest
    ``debounce_ms`` after the first change. With ``step_ms=20`` and
    ``debounce_ms=100`` a write is reported within about 20-40 ms, and never later than
    about 0.1 s however busy the directory is: far below the seconds a daemon restart
    takes, while a busy log costs at most about 25 polls a second. The default 1600 ms
    debounce of watchfiles would add up to 1.6 s to every reaction. ``step_ms`` is also
    how often the idle loop wakes to check ``stop`` (50 times a second, cheap), so
    setting ``stop`` ends the generator within about 20 ms. The tick may come up to a
    quarter of ``poll_interval_s`` late (the native timeout is a quarter of it).
    """
    import watchfiles  # noqa: PLC0415  # only the watcher needs it, never the tailer

    targets = {Path(p).absolute() for p in paths}
    folders = {t for t in targets if t.is_dir()}
    interval_ms = max(1, round(poll_interval_s * 1000))
    timeout_ms = max(step_ms, interval_ms // 4)
    last_tick = time.monotonic()

    def parents() -> list[Path]:
        return sorted({t.parent for t in targets - folders if t.parent.is_dir()} | folders)

    while not stop.is_set():
        dirs = parents()
        if not dirs:
            if stop.wait(poll_interval_s):
                return
            last_tick = time.monotonic()
            yield set()
            continue
        changes_seen = watchfiles.watch(
            *dirs,
            watch_filter=None,
            debounce=debounce_ms,
            step=step_ms,
            stop_event=stop,
            rust_timeout=timeout_ms,
            yield_on_timeout=True,
            recursive=False,
            ignore_permission_denied=True,
            force_polling=force_polling,
        )
        try:
            for changes in changes_seen:
                hit: set[Path] = set()
                for _, raw in changes:
                    path = Path(raw)
                    if path in targets:
                        hit.add(path)
                    if path.parent in folders:
                        hit.add(path.parent)
                if hit:
                    yield hit
                now = time.monotonic()
                if now - last_tick >= poll_interval_s:
                    last_tick = now
                    yield set()
                    if parents() != dirs:
                        break  # a directory came or went: watch the new set
            else:
                return  # watchfiles saw ``stop``
        except (OSError, RuntimeError) as exc:  # the native watcher failed: poll meanwhile
            logger.warning("watching %s failed, polling only for now: %s", dirs, exc)
            if stop.wait(poll_interval_s):
                return
            last_tick = time.monotonic()
            yield set()
        finally:
            changes_seen.close()  # stops the native watcher now, not at garbage collection


_IN_CLOEXEC = 0o2000000
_IN_NONBLOCK = 0o4000
_IN_EVENTS = (
    0x00000002  # IN_MODIFY
    | 0x00000004  # IN_ATTRIB
    | 0x00000008  # IN_CLOSE_WRITE
    | 0x00000040  # IN_MOVED_FROM
    | 0x00000080  # IN_MOVED_TO
    | 0x00000100  # IN_CREATE
    | 0x00000200  # IN_DELETE
)
_IN_Q_OVERFLOW = 0x00004000
_EVENT_HEAD = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)


def watch_inotify(
    paths: Iterable[str | os.PathLike[str]],
    *,
    stop: threading.Event,
    poll_interval_s: float = 1.0,
    stop_check_s: float = 0.5,
) -> Iterator[set[Path]]:
    """:func:`watch_files` on Linux inotify directly: same contract, no step loop.

    The thread sleeps in ``select`` until the kernel reports a change in a watched
    directory, so a write is reported within about a millisecond, and an idle watcher
    wakes only every ``stop_check_s`` (to see ``stop``) and every ``poll_interval_s``
    (the safety-net tick). A queue overflow or a directory that appears later turns
    into a tick (poll everything). Raises ``OSError`` when inotify is not available.
    """
    targets = {Path(p).absolute() for p in paths}
    folders = {t for t in targets if t.is_dir()}
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(_IN_CLOEXEC | _IN_NONBLOCK)
    if fd < 0:
        error = ctypes.get_errno()
        raise OSError(error, f"inotify_init1: {os.strerror(error)}")
    watched: dict[int, Path] = {}

    def add_watches() -> None:
        wanted = {t.parent for t in targets - folders} | folders
        for directory in sorted(wanted - set(watched.values())):
            wd = libc.inotify_add_watch(fd, os.fsencode(directory), _IN_EVENTS)
            if wd >= 0:
                watched[wd] = directory

    try:
        add_watches()
        last_tick = time.monotonic()
        while not stop.is_set():
            wait = max(0.0, min(stop_check_s, last_tick + poll_interval_s - time.monotonic()))
            readable, _, _ = select.select([fd], [], [], wait)
            hit: set[Path] = set()
            overflow = False
            if readable:
                hit, overflow = _read_events(fd, watched, targets, folders)
            if hit:
                yield hit
            now = time.monotonic()
            if overflow or now - last_tick >= poll_interval_s:
                last_tick = now
                add_watches()  # directories that appeared since
                yield set()
    finally:
        os.close(fd)


def _read_events(
    fd: int, watched: dict[int, Path], targets: set[Path], folders: set[Path]
) -> tuple[set[Path], bool]:
    """The watched paths named by the pending inotify events, and whether it overflowed."""
    hit: set[Path] = set()
    overflow = False
    while True:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return hit, overflow
        offset = 0
        while offset + _EVENT_HEAD.size <= len(data):
            wd, mask, _cookie, size = _EVENT_HEAD.unpack_from(data, offset)
            name = data[offset + _EVENT_HEAD.size : offset + _EVENT_HEAD.size + size]
            offset += _EVENT_HEAD.size + size
            overflow |= bool(mask & _IN_Q_OVERFLOW)
            directory = watched.get(wd)
            if directory is not None and name:
                path = directory / os.fsdecode(name.rstrip(b"\0"))
                if path in targets:
                    hit.add(path)
                elif directory in folders:
                    hit.add(directory)
