"""Tailed logs into the runner: every configured log followed, parsed and decided on.

Each ``[[source]]`` (and each adopted share's own ``log``) gets a
:class:`~healer.sources.tail.FileTailer` that resumes where the journal says it was
read up to, and a :class:`~healer.parse.SourceParser` per file. Offsets count per
file: a rotated file, and a truncated one (same inode, new first line), are streams
of their own, so the runner's "already journaled" check never confuses two files.
Events are named by the configured tag of the share they are about.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from healer.config import Config, SourceConfig
from healer.events import Event
from healer.observe import LineTally, Observer
from healer.parse import Checkpoint, SourceParser
from healer.runner import Runner
from healer.sources.tail import FileTailer, TailBatch, TailPosition

__all__ = ["FollowedLogs"]

READS_PER_TURN = 64  # polls of one log per turn: a huge backlog is read over several


@dataclass(slots=True)
class _Tailed:
    """A configured log at run time: its tailer and the parser of its current file."""

    config: SourceConfig
    tailer: FileTailer
    resume: Checkpoint | None = None
    parser: SourceParser | None = None
    stream: str = ""
    share: str | None = None  # the tag of the share whose virtiofsd writes this log


class FollowedLogs:
    """The watchdog's tailed logs; :meth:`read` runs on the decision loop only."""

    def __init__(
        self,
        config: Config,
        runner: Runner,
        observer: Observer,
        tally: LineTally,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.runner = runner
        self.observer = observer
        self.tally = tally
        self.clock = clock
        self.tailed: list[_Tailed] = []
        # With one share, a line that names none (a VM reset) is about that one.
        self.only_share = config.shares[0].tag if len(config.shares) == 1 else None
        self.aliases = {
            alias: share.tag
            for share in config.shares
            for alias in (share.name, share.tag, share.socket)
        }

    @property
    def paths(self) -> list[str]:
        return [t.config.path for t in self.tailed]

    @property
    def lines_cut(self) -> int:
        return sum(t.tailer.stats.lines_cut for t in self.tailed)

    def close(self) -> None:
        for tailed in self.tailed:
            tailed.tailer.close()

    def start(self) -> None:
        """Tailers resume where the journal says each log was read up to."""
        sources: list[tuple[SourceConfig, str | None]] = [(s, None) for s in self.config.sources]
        sources += [  # an adopted virtiofsd's own log tells about its share
            (SourceConfig(share.log, f"virtiofsd:{share.name}"), share.tag)
            for share in self.config.shares
            if share.mode == "adopt" and share.log
        ]
        for source, tag in sources:
            position = self.runner.tails.get(source.name)
            start = position
            tailed = _Tailed(source, FileTailer(source.path, start=start), share=tag)
            tailed.resume = self.runner.checkpoints.get(source.name) if start else None
            self.tailed.append(tailed)

    def read(self) -> None:
        for tailed in self.tailed:
            read = False
            for _ in range(READS_PER_TURN):
                for batch in tailed.tailer.poll():
                    self._on_batch(tailed, batch)
                    read = True
                if tailed.tailer.at_eof:
                    break
            if read and tailed.tailer.at_eof and tailed.parser is not None:
                self._flush(tailed)

    def _flush(self, tailed: _Tailed) -> None:
        """Live, the last record is complete when the writer stopped: decide on it now.

        (Replay waits for the next line to see whether it continues the record; a
        live writer puts a record's lines in one write, so they arrive together.)
        """
        assert tailed.parser is not None  # noqa: S101 - checked by the caller
        read_at = self.clock()
        # Live, a record is dated no later than when it was read, even the last one.
        closed = tailed.parser.close(ingest=datetime.fromtimestamp(read_at, UTC))
        events = [self._of(tailed, i) for i in closed if isinstance(i, Event)]
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
            tailed.parser = SourceParser(name, default_year=self._now().year, resume=tailed.resume)
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
            events = [self._of(tailed, i) for i in items if isinstance(i, Event)]
            self.tally.report(self.observer, name, tailed.parser)
            self.runner.ingest(
                events, (name, point), stream=tailed.stream, tail=tail, read_at=read_at
            )
            return
        if tailed.parser is not None:  # a file ends or a new one starts
            closed = tailed.parser.close(ingest=self._now())
            events = [self._of(tailed, i) for i in closed if isinstance(i, Event)]
            self.tally.report(self.observer, name, tailed.parser)
            self.runner.ingest(events, stream=tailed.stream)
        tailed.parser = None
        if batch.kind == "start":
            tailed.parser = SourceParser(name, default_year=self._now().year)

    def _of(self, tailed: _Tailed, event: Event) -> Event:
        """Name the share an event is about by its configured tag.

        Logs name a share by tag, socket path or device id; a share's own virtiofsd
        log is about that share even where its lines name none, and so is every line
        when there is only one share.
        """
        share = event.share
        if share is None:
            share = tailed.share or self.only_share
        share = self.aliases.get(share, share) if share is not None else None
        return event if share == event.share else replace(event, share=share)

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)
