"""When to poll the tailers: file-system notifications with a slow poll as safety net.

:class:`~healer.sources.tail.FileTailer` reads only when polled and never blocks;
this module decides *when*: watchfiles' native watcher on the logs' directories says
"now", and a tick every ``poll_interval_s`` covers missed or coalesced notifications.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = ["watch_files"]

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
    file must still be noticed), non-recursively. A non-empty set means "poll these
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
    interval_ms = max(1, round(poll_interval_s * 1000))
    timeout_ms = max(step_ms, interval_ms // 4)
    last_tick = time.monotonic()

    def parents() -> list[Path]:
        return sorted({t.parent for t in targets if t.parent.is_dir()})

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
                hit = {p for _, raw in changes if (p := Path(raw)) in targets}
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
