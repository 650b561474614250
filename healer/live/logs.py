"""Tailed logs into the runner: every configured log followed, parsed and decided on.

Each ``[[source]]`` (and each adopted share's own ``log``) gets a
:class:`~healer.sources.tail.FileTailer` that resumes where the journal says it was
read up to, and a :class:`~healer.parse.SourceParser` per file. Offsets count per
file: a rotated file, and a truncated one (same inode, new first line), are streams
of their own, so the runner's "already journaled" check never confuses two files.
Each event is given the key of the share it is about (:class:`healer.shares.ShareKeys`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from healer.config import SourceConfig
from healer.events import Event
from healer.eventtime import SKEW_TOLERANCE
from healer.observe import LineTally, Observer
from healer.parse import Checkpoint, Parsed, SourceParser
from healer.runner import Runner
from healer.shares import ShareKeys
from healer.sources.tail import FileTailer
from healer.sources.tailtypes import TailBatch, TailPosition

__all__ = ["TailedLog", "TailedLogs"]

log = logging.getLogger(__name__)

READS_PER_TURN = 64  # polls of one log per turn: a huge backlog is read over several


@dataclass(frozen=True, slots=True)
class TailedLog:
    """A log to follow; ``share``: the share it is about when its lines name none (an
    adopted daemon's own log)."""

    source: SourceConfig
    share: str | None = None


@dataclass(slots=True)
class _Tailed:
    """A configured log at run time: its tailer and the parser of its current file."""

    config: SourceConfig
    tailer: FileTailer
    resume: Checkpoint | None = None
    parser: SourceParser | None = None
    stream: str = ""
    share: str | None = None

    @property
    def guest(self) -> bool:
        """The guest writes this log (its console): its events ask the host for nothing."""
        return self.config.trust == "guest"


class TailedLogs:
    """The watchdog's tailed logs; :meth:`read` runs on the decision loop only."""

    def __init__(
        self,
        runner: Runner,
        keys: ShareKeys,
        observer: Observer,
        tally: LineTally,
        *,
        clock: Callable[[], float] = time.time,
        clock_skew: float = SKEW_TOLERANCE,
        vm_keys: Mapping[str, ShareKeys] | None = None,
    ) -> None:
        self.runner = runner
        # A VM's log names the devices that VM's VMM made (``_fs0`` in two VMs is two
        # devices): a source of a VM resolves names among that VM's shares only.
        self.vm_keys = dict(vm_keys or {})
        self.clock_skew = clock_skew
        self.keys = keys
        self.observer = observer
        self.tally = tally
        self.clock = clock
        self.tailed: list[_Tailed] = []
        self.unknown: dict[str, int] = {}  # source -> events naming no configured share

    @property
    def paths(self) -> list[str]:
        return [t.config.path for t in self.tailed]

    @property
    def lines_cut(self) -> int:
        return sum(t.tailer.stats.lines_cut for t in self.tailed)

    def close(self) -> None:
        for tailed in self.tailed:
            tailed.tailer.close()

    def start(self, logs: Sequence[TailedLog]) -> None:
        """Tailers resume where the journal says each log was read up to."""
        for log in logs:
            self.add(log)

    def add(self, log: TailedLog) -> None:
        source = log.source
        start = self.runner.tails.get(source.name)
        tailed = _Tailed(source, FileTailer(source.path, start=start), share=log.share)
        tailed.resume = self.runner.checkpoints.get(source.name) if start else None
        self.tailed.append(tailed)

    def remove(self, name: str) -> None:
        """Stop following a source (removed from the configuration by a reload)."""
        for tailed in [t for t in self.tailed if t.config.name == name]:
            tailed.tailer.close()
            self.tailed.remove(tailed)

    @property
    def names(self) -> list[str]:
        return [t.config.name for t in self.tailed]

    def read(self) -> bool:
        """Read every tailed log, a bounded amount each; True if one has more to read
        (the loop then comes back at once instead of a tick later)."""
        behind = False
        for tailed in self.tailed:
            read = False
            for _ in range(READS_PER_TURN):
                for batch in tailed.tailer.poll():
                    self._on_batch(tailed, batch)
                    read = True
                if tailed.tailer.at_eof:
                    break
            behind = behind or (read and not tailed.tailer.at_eof)
            if read and tailed.tailer.at_eof and tailed.parser is not None:
                self._flush(tailed)
        return behind

    def _flush(self, tailed: _Tailed) -> None:
        """Live, the last record is complete when the writer stopped: decide on it now.

        (Replay waits for the next line to see whether it continues the record; a
        live writer puts a record's lines in one write, so they arrive together.)
        """
        assert tailed.parser is not None  # noqa: S101 - checked by the caller
        read_at = self.clock()
        # Live, a record is dated no later than when it was read, even the last one.
        closed = tailed.parser.close(ingest=datetime.fromtimestamp(read_at, UTC))
        events = self._events(tailed, closed)
        point = tailed.parser.checkpoint()
        identity = tailed.tailer.position.identity
        tail = TailPosition(identity, point.offset)
        self.tally.report(self.observer, tailed.config.name, tailed.parser)
        self.runner.ingest(
            events,
            (tailed.config.name, point),
            stream=tailed.stream,
            tail=tail,
            read_at=read_at,
        )

    def _on_batch(self, tailed: _Tailed, batch: TailBatch) -> None:
        name = tailed.config.name
        if batch.kind == "lines" and tailed.parser is None:
            tailed.parser = self._parser(name, tailed, resume=tailed.resume)
            tailed.resume = None
        if batch.identity is not None and batch.kind != "end":
            # Offsets count per file: a rotated file, and a truncated one (same inode,
            # new first line), start again at 0 as a stream of their own.
            identity = batch.identity
            fingerprint = identity.fingerprint or "-"
            tailed.stream = f"{name}@{identity.device}:{identity.inode}:{fingerprint}"
        if batch.kind == "lines" and tailed.parser is not None:
            read_at = self.clock()
            ingest = datetime.fromtimestamp(read_at, UTC)
            items = tailed.parser.feed(batch.block, batch.offset, ingest=ingest)
            point = tailed.parser.checkpoint()
            tail = TailPosition(batch.identity, point.offset)
            events = self._events(tailed, items)
            self.tally.report(self.observer, name, tailed.parser)
            self.runner.ingest(
                events, (name, point), stream=tailed.stream, tail=tail, read_at=read_at
            )
            return
        if tailed.parser is not None:  # a file ends or a new one starts
            closed = tailed.parser.close(ingest=self._now())
            events = self._events(tailed, closed)
            self.tally.report(self.observer, name, tailed.parser)
            self.runner.ingest(events, stream=tailed.stream)
        tailed.parser = None
        if batch.kind == "start":
            tailed.parser = self._parser(name, tailed)

    def _parser(self, name: str, tailed: _Tailed, resume: Checkpoint | None = None) -> SourceParser:
        return SourceParser(
            name,
            default_year=self._now().year,
            resume=resume,
            guest=tailed.guest,
            skew_tolerance=self.clock_skew,
        )

    def _events(self, tailed: _Tailed, items: Sequence[Parsed]) -> list[Event]:
        """The events about this configuration's shares (or none in particular), each
        with its share's key: a share's own daemon log is about that share even where
        its lines name none. An event naming a share or device the configuration does
        not have is counted and dropped: a log (or the guest console in it) must not
        make state, decisions, journal records or metric labels of names it invents."""
        kept = []
        keys = self.vm_keys.get(tailed.config.vm or "", self.keys)
        for item in items:
            if not isinstance(item, Event):
                continue
            event = keys.resolve(item, default=tailed.share)
            if event.share is not None and event.share not in keys.keys:
                self.unknown[tailed.config.name] = self.unknown.get(tailed.config.name, 0) + 1
                if self.unknown[tailed.config.name] == 1:
                    log.warning(
                        "log %s names share %r, which is not configured: such events are "
                        "counted and not decided on",
                        tailed.config.name,
                        event.share[:64],
                    )
                continue
            kept.append(event)
        return kept

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)
