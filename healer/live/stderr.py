"""Each virtiofsd's stderr into the event stream, attributed to the daemon that wrote it.

The holder points every daemon's stderr at a file of its own,
``<holder>/stderr/<share>.<generation>.log``, and never reads it; this feed does. A
file belongs to exactly one daemon instance, so a dead daemon's last lines, read
late, still speak only for that daemon (its pid and generation go into each event's
``origin``), and a line is never lost while healer is away: it waits in the file.
Positions are journaled per file, so a restarted healer goes on where it was; a file
is deleted once its daemon is gone and every line of it is journaled.

Lines are read when the directory changes (inotify) or on the loop's safety tick,
in bounded blocks; the last record of a read is decided at once (a live writer puts
a record's lines in one write).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from healer.events import Event
from healer.eventtime import SKEW_TOLERANCE
from healer.observe import LineTally, Observer
from healer.parse import SourceParser
from healer.runner import Runner

__all__ = ["StderrFeed", "stream_of"]

log = logging.getLogger(__name__)

BLOCK = 256 << 10  # bytes read from one file per read
LINE_LIMIT = 1 << 16  # a "line" this long without a newline is cut (and counted)
KEEP_LINES = 20  # the last lines of a daemon, for its exit report
_NAME = re.compile(r"^(?P<share>[A-Za-z0-9][A-Za-z0-9_.-]{0,63})\.(?P<gen>\d{1,18})\.log$")


def stream_of(share: str, generation: int) -> str:
    """The journal stream of one daemon's stderr (offsets count in its own file)."""
    return f"virtiofsd:{share}#{generation}"


@dataclass(slots=True)
class _Spool:
    """One daemon's stderr file as read so far."""

    share: str
    generation: int
    pid: int | None
    path: Path
    parser: SourceParser
    offset: int = 0
    ended: bool = False  # the daemon is gone: what is in the file is all there is
    last: deque[bytes] = field(default_factory=lambda: deque(maxlen=KEEP_LINES))

    @property
    def stream(self) -> str:
        return stream_of(self.share, self.generation)


class StderrFeed:
    """Reads the daemons' stderr files; runs on the decision loop only."""

    def __init__(
        self,
        directory: Path,
        runner: Runner,
        *,
        observer: Observer,
        tally: LineTally,
        copies: Mapping[str, str | None],
        clock: Callable[[], float] = time.time,
        clock_skew: float = SKEW_TOLERANCE,
    ) -> None:
        self.directory = directory
        self.clock_skew = clock_skew
        self.runner = runner
        self.observer = observer
        self.tally = tally
        self.clock = clock
        self.copies = dict(copies)  # share -> share.log, a copy of its daemon's stderr
        self._copy: dict[str, BinaryIO] = {}
        self.spools: dict[tuple[str, int], _Spool] = {}
        self.lines_cut = 0

    # --- which files -----------------------------------------------------------------

    def follow(self, share: str, generation: int, pid: int | None, path: Path) -> None:
        """Read a daemon's stderr file from where the journal says it got to."""
        if path.parent != self.directory:
            log.warning("share %s: virtiofsd %s has no stderr file to read (%s)", share, pid, path)
            return
        key = (share, generation)
        if key in self.spools:
            if pid is not None:
                self.spools[key].pid = pid
            return
        stream = stream_of(share, generation)
        resume = self.runner.checkpoints.get(stream)
        parser = SourceParser(
            f"virtiofsd:{share}",
            default_year=self._now().year,
            resume=resume,
            skew_tolerance=self.clock_skew,
        )
        offset = resume.offset if resume is not None else 0
        self.spools[key] = _Spool(share, generation, pid, path, parser, offset)

    def found(self) -> Iterator[tuple[str, int, Path]]:
        """The stderr files in the directory: (share, generation, path), oldest first."""
        try:
            names = sorted(entry.name for entry in self.directory.iterdir())
        except OSError:
            return
        matches = [(m, name) for name in names if (m := _NAME.match(name))]
        for m, name in sorted(matches, key=lambda x: (x[0]["share"], int(x[0]["gen"]))):
            yield m["share"], int(m["gen"]), self.directory / name

    def forget_share(self, share: str) -> None:
        """A share was removed from the configuration (its files go with the holder's)."""
        for key in [k for k in self.spools if k[0] == share]:
            self.tally.forget(self.spools.pop(key).stream)
        copy = self._copy.pop(share, None)
        if copy is not None:
            copy.close()

    # --- reading -------------------------------------------------------------------------

    def read(self) -> bool:
        """Read what every followed file holds now (one block each, so no file waits).
        True if some file holds more: the loop comes back for it at once, not a tick
        later (a daemon that wrote a flood and fell silent wakes no watcher)."""
        behind = False
        for spool in list(self.spools.values()):
            behind = self._read(spool, BLOCK) or behind
            if spool.ended:
                self._finish(spool)
        return behind

    def ended(self, share: str, generation: int, *, limit: int = BLOCK) -> list[bytes]:
        """The daemon is gone: read its file (up to ``limit`` now, the rest later) before
        its exit is decided on, so its own last lines come first. Returns the last lines
        read (at most KEEP_LINES), for its exit report."""
        spool = self.spools.get((share, generation))
        if spool is None:
            return []
        spool.ended = True
        self._read(spool, limit)
        self._finish(spool)  # (which lets the spool go once its file is read)
        return list(spool.last)

    def _read(self, spool: _Spool, limit: int) -> bool:
        """Read up to ``limit`` bytes of whole lines. True if the file may hold more: the
        last read filled all it asked for (a partial line still being written does not)."""
        try:
            fd = os.open(spool.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        full = False
        try:
            while limit > 0:
                wanted = min(BLOCK, limit)
                data = os.pread(fd, wanted, spool.offset)
                full = len(data) == wanted
                if not data:
                    break
                end = data.rfind(b"\n") + 1
                if end == 0:
                    if len(data) < LINE_LIMIT and not spool.ended:
                        break  # a partial line: the rest is still being written
                    end = min(len(data), LINE_LIMIT)
                    data = data[:end] + b"\n"  # cut (or, at a dead daemon's end, closed)
                    self.lines_cut += 1
                else:
                    data = data[:end]
                self._feed(spool, data)
                spool.offset += end
                limit -= end
        finally:
            os.close(fd)
        return full

    def _feed(self, spool: _Spool, block: bytes) -> None:
        read_at = self.clock()
        ingest = datetime.fromtimestamp(read_at, UTC)
        items = spool.parser.feed(block, spool.offset, ingest=ingest)
        items += spool.parser.close(ingest=ingest)  # a live writer writes a record whole
        spool.last.extend(block.splitlines()[-KEEP_LINES:])
        self._copy_out(spool.share, block)
        events = [self._about(spool, i) for i in items if isinstance(i, Event)]
        self.tally.report(self.observer, spool.parser.source, spool.parser, key=spool.stream)
        point = spool.parser.checkpoint()
        self.runner.ingest(events, (spool.stream, point), stream=spool.stream, read_at=read_at)

    def _about(self, spool: _Spool, event: Event) -> Event:
        """A line of this file is about this daemon and this share, whatever it names."""
        origin = replace(
            event.origin, program="virtiofsd", pid=spool.pid, generation=spool.generation
        )
        return replace(event, share=spool.share, origin=origin)

    def _finish(self, spool: _Spool) -> None:
        """A dead daemon's file read to its end: let it go."""
        try:
            size = spool.path.stat().st_size
        except FileNotFoundError:
            size = spool.offset
        if spool.offset < size:
            return  # more to read on the next turn (a daemon that flooded its stderr)
        self.spools.pop((spool.share, spool.generation), None)
        self.tally.forget(spool.stream)
        with contextlib.suppress(OSError):
            spool.path.unlink()

    def _copy_out(self, share: str, block: bytes) -> None:
        target = self.copies.get(share)
        if not target:
            return
        try:
            copy = self._copy.get(share)
            if copy is None:
                # private like the spool it copies (virtiofsd's output names the host's
                # files), and never through a link someone planted at the path
                flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
                fd = os.open(target, flags, 0o600)
                copy = self._copy[share] = os.fdopen(fd, "ab", buffering=0)
            copy.write(block)
        except OSError as exc:  # a full disk must not stop the healing
            log.error("cannot copy virtiofsd output to %s: %s", target, exc)

    def close(self) -> None:
        for copy in self._copy.values():
            with contextlib.suppress(OSError):
                copy.close()
        self._copy.clear()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)
