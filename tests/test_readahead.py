"""read_ahead: the same blocks in the same order, bounded, errors raised where they fell."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from healer.sources.readahead import read_ahead


def _blocks(n: int) -> Iterator[tuple[bytes, int]]:
    for i in range(n):
        yield f"line {i}\n".encode(), i * 100


def test_every_block_comes_once_in_order_with_its_scan() -> None:
    got = list(read_ahead(_blocks(500), len))
    assert got == [(f"line {i}\n".encode(), i * 100, len(f"line {i}\n")) for i in range(500)]


def test_a_read_error_is_raised_after_the_blocks_before_it() -> None:
    def failing() -> Iterator[tuple[bytes, int]]:
        yield b"a\n", 0
        yield b"b\n", 2
        raise OSError(5, "Input/output error")

    seen: list[bytes] = []

    def read_all() -> None:
        seen.extend(block for block, _offset, _scan in read_ahead(failing(), len))

    with pytest.raises(OSError, match="Input/output error"):
        read_all()
    assert seen == [b"a\n", b"b\n"]


def test_it_reads_at_most_depth_blocks_ahead_and_stops_with_its_consumer() -> None:
    produced = []

    def counted() -> Iterator[tuple[bytes, int]]:
        for i in range(10_000):
            produced.append(i)
            yield b"x\n", i

    before = threading.active_count()
    ahead = read_ahead(counted(), len, depth=2)
    next(ahead)
    threading.Event().wait(0.3)  # let the reader run as far as it may
    assert len(produced) <= 1 + 2 + 1  # the one taken, two waiting, one in its hands
    ahead.close()  # the consumer stops early: the thread ends
    assert threading.active_count() == before
