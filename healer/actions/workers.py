"""Where slow actions run: one worker thread per share, a bounded queue each.

A re-add can wait up to a minute for cloud-hypervisor's API, a remount for a slow
guest. The decision loop must not wait with them: it keeps reading logs and healing
other shares. One thread per share keeps a share's actions in the order they were
decided (the runner also holds a successor until its predecessor's outcome is in);
different shares proceed side by side. The outcome of each piece of work goes back
through ``done``, which the watchdog turns into an input of its loop, so the journal
is still written by one thread only.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from healer.engine.model import Status

__all__ = ["ShareWorkers", "Work"]

log = logging.getLogger(__name__)

Work = Callable[[], "Status | tuple[Status, str]"]
"""A slow action bound to its arguments; returns a status, or a status and why."""

_STOP = object()


@dataclass(slots=True)
class _Worker:
    thread: threading.Thread
    inbox: queue.Queue[object]


class ShareWorkers:
    """Runs work per share on that share's thread; ``rejected`` counts full queues."""

    def __init__(self, done: Callable[[str, Status, str], None], *, queue_limit: int = 16) -> None:
        """``done(key, status, detail)`` is called from the worker thread."""
        self.done = done
        self.queue_limit = queue_limit
        self.rejected = 0
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()

    def submit(self, share: str, key: str, work: Work) -> bool:
        """Queue ``work`` on ``share``'s thread; False (and counted) when its queue is full."""
        with self._lock:
            worker = self._workers.get(share)
            if worker is None:
                inbox: queue.Queue[object] = queue.Queue(self.queue_limit)
                thread = threading.Thread(
                    target=self._serve, args=(inbox,), name=f"actions:{share}", daemon=True
                )
                worker = self._workers[share] = _Worker(thread, inbox)
                thread.start()
        try:
            worker.inbox.put_nowait((key, work))
        except queue.Full:
            self.rejected += 1
            return False
        return True

    def _serve(self, inbox: queue.Queue[object]) -> None:
        while True:
            item = inbox.get()
            if item is _STOP:
                return
            key, work = cast(tuple[str, Work], item)
            try:
                result = work()
                status, detail = (result, "") if isinstance(result, str) else result
                status = Status(status)
            except Exception as exc:  # an action's bug must not kill the share's worker
                log.exception("action %s raised", key)
                status, detail = Status.FAILED, f"{type(exc).__name__}: {exc}"
            self.done(key, status, detail)

    def close(self, *, timeout_s: float = 5.0) -> None:
        """Ask every worker to stop after its current work; wait up to ``timeout_s`` each.

        Work still queued is dropped: its decision stays ``started`` in the journal, and
        the next start-up's reconcile asks the world whether it was done.
        """
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        for worker in workers:
            while True:  # make room for the stop marker: queued work is dropped
                try:
                    worker.inbox.put_nowait(_STOP)
                    break
                except queue.Full:
                    with contextlib.suppress(queue.Empty):
                        worker.inbox.get_nowait()
        for worker in workers:
            worker.thread.join(timeout_s)
