"""Read a log's next blocks on a second thread while the parser works on this one.

The bytes of a block are read and scanned for needles (:func:`healer.parse.scan`,
which lets go of the GIL) ahead of the parser, so reading and the one pass over every
byte overlap with parsing on a second core. Bounded: at most ``depth`` blocks wait;
an error of the reader (a cut gzip stream, an I/O error) is raised where the block
would have been; a consumer that stops early stops the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["read_ahead"]

T = TypeVar("T")
_POLL = 0.1  # seconds a blocked reader waits before looking whether it should stop


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


@dataclass(frozen=True, slots=True)
class _Block(Generic[T]):
    data: bytes
    offset: int
    scanned: T


_END = object()


def read_ahead(
    batches: Iterator[tuple[bytes, int]], scan: Callable[[bytes], T], *, depth: int = 2
) -> Generator[tuple[bytes, int, T], None, None]:
    """``(block, offset, scan(block))`` for each of ``batches``, read ``depth`` ahead."""
    waiting: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                waiting.put(item, timeout=_POLL)
            except queue.Full:
                continue
            return True
        return False

    def read() -> None:
        try:
            for data, offset in batches:
                if not put(_Block(data, offset, scan(data))):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put(_Failed(exc))
            return
        put(_END)

    thread = threading.Thread(target=read, name="healer-read-ahead", daemon=True)
    thread.start()
    try:
        while (item := waiting.get()) is not _END:
            if isinstance(item, _Failed):
                raise item.error
            if isinstance(item, _Block):
                yield item.data, item.offset, item.scanned
    finally:
        stop.set()
        thread.join()
