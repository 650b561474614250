"""Offline replay: read captured logs start to end and yield their events.

Each input is its own source with its own parser and clock. With several inputs the
streams are merged by event time (a stable k-way merge that never reorders a source),
holding one batch per source, so memory stays constant however large the files are.
:func:`decide` runs the rules over such a stream.
"""

from __future__ import annotations

import heapq
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime

from healer.engine.model import Output
from healer.errors import InputError
from healer.events import Event
from healer.parse import ParseStats, SourceParser
from healer.parse.stream import scan
from healer.runner import Runner
from healer.sources import ReadStats, open_log, read_batches
from healer.sources.readahead import read_ahead
from healer.timeline import Item

__all__ = ["Input", "ReplaySummary", "decide", "replay"]

_READ_HINT = "is it a complete file? a cut .gz stream ends early"
# Blocks of 4 MiB when a reader thread scans ahead: with 1 MiB ones it spends more
# time waiting for the GIL between blocks than scanning (measured: 0.75 s vs 0.52 s
# for the benchmark's million lines); at most four of them are held at once.
_AHEAD_BLOCK = 4 << 20


@dataclass(frozen=True, slots=True)
class Input:
    """One source to replay: its name in events and where its bytes come from."""

    name: str
    path: str | None  # None means standard input


@dataclass(slots=True)
class ReplaySummary:
    """Totals over all sources, filled in while the replay runs."""

    parse: dict[str, ParseStats] = field(default_factory=dict)
    read: dict[str, ReadStats] = field(default_factory=dict)
    kinds: Counter[str] = field(default_factory=Counter)


def replay(
    inputs: Iterable[Input],
    *,
    default_year: int,
    keep_unrecognized: bool = False,
    merge: bool = True,
    max_line_bytes: int = 1 << 16,
    summary: ReplaySummary | None = None,
    progress: Callable[[int], object] | None = None,
) -> Iterator[Item]:
    """Yield every event (and, with ``keep_unrecognized``, every unknown record)."""
    summary = summary if summary is not None else ReplaySummary()
    with ExitStack() as stack:
        streams: list[Iterator[tuple[float, int, int, Item]]] = []
        for index, source in enumerate(inputs):
            stream = (
                sys.stdin.buffer
                if source.path is None
                else stack.enter_context(open_log(source.path))
            )
            parser = SourceParser(
                source.name, default_year=default_year, keep_unrecognized=keep_unrecognized
            )
            read_stats = ReadStats()
            summary.parse[source.name] = parser.stats
            summary.read[source.name] = read_stats
            batches = read_batches(
                stream,
                chunk_size=(1 << 20) if keep_unrecognized else _AHEAD_BLOCK,
                max_line_bytes=max_line_bytes,
                stats=read_stats,
                progress=progress,
            )
            streams.append(_keyed(index, parser, batches))
        ordered = heapq.merge(*streams) if merge else (i for s in streams for i in s)
        for _key, _index, _seq, item in ordered:
            if isinstance(item, Event):
                summary.kinds[item.kind] += 1
            yield item


def _keyed(
    index: int,
    parser: SourceParser,
    batches: Iterator[tuple[bytes, int]],
) -> Iterator[tuple[float, int, int, Item]]:
    """Sort keys for the merge: event time, else the source's previous key.

    A read error part-way (a cut gzip stream, an I/O error) becomes an InputError
    that names the source; the events before it have been yielded already.
    """
    key = float("-inf")
    seq = 0

    def keyed(items: list[Item]) -> Iterator[tuple[float, int, int, Item]]:
        nonlocal key, seq
        for item in items:
            time: datetime | None = item.time if isinstance(item, Event) else None
            if time is not None:
                key = time.timestamp()
            seq += 1
            yield key, index, seq, item

    first = True

    def zones(block: bytes, offset: int) -> list[Item]:
        """What the source's clocks say, from its start, before its first record."""
        nonlocal first
        learned = parser.learn_clocks(block) if first and offset == 0 else []
        first = False
        return learned

    try:
        if parser.keep_unrecognized:  # the line path walks every line; no scan to share
            for block, offset in batches:
                yield from keyed(zones(block, offset) + parser.feed(block, offset))
        else:
            for block, offset, scanned in read_ahead(batches, scan):
                yield from keyed(zones(block, offset) + parser.feed(block, offset, scanned=scanned))
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(parser.source, f"unreadable: {exc}", _READ_HINT) from exc
    yield from keyed(parser.close())


def decide(items: Iterable[Item], runner: Runner) -> Iterator[Item | Output]:
    """Run the rules over a replayed stream: each event, then what it caused."""
    for item in items:
        yield item
        if isinstance(item, Event):
            yield from runner.ingest((item,))
    yield from runner.finish()  # the input ended: a connect still waiting counts now
