"""Follow one log path as a perpetual stream of whole lines with exact byte offsets.

A :class:`FileTailer` turns a path into batches the way :func:`read_batches` does for a
finished file, but across the life of a log: files that do not exist yet, appends in
any pieces, rename-and-create rotation, copytruncate, deletion and re-creation.

- **Identity.** A file is ``(st_dev, st_ino)`` plus a fingerprint of its first line
  (:class:`~healer.sources.tailtypes.FileIdentity`). Inode numbers are reused quickly
  after a delete, so the fingerprint is what tells a resumed tailer that the inode it
  finds is still its file.
- **Poll is the truth.** :meth:`FileTailer.poll` never blocks and needs no clock: it
  stats, reads what is there (up to a byte budget) and returns. Notifications
  (:func:`healer.sources.notify.watch_files`) only say *when* to poll, so tests step
  a tailer by calling ``poll()`` and nothing here sleeps.
- **Rotation.** When the path names another file (or none), the open descriptor is
  read to its end first, including lines a writer appended after the rename; then the
  file is finished and the new one is read from 0. Lines written to the old file after
  that poll are not read (as in mtail): rotate with ``copytruncate`` or signal the
  writer to reopen.
- **Truncation.** ``size < bytes read``, or a first-bytes prefix that changed under the
  same inode (truncated and rewritten between two polls), restarts the file at 0 and
  is counted. Bytes written between the last poll and the truncation are lost: that
  is inherent to copytruncate.
- **Partial lines** are held until their newline arrives. They are returned, with a
  newline added, only when their file is finished (rotated away, deleted, truncated).
- **Long lines** are cut to ``max_line_bytes`` and counted; the rest of such a line is
  skipped without being held, and a cut line ends its block so offsets stay exact.
- **Errors** (``EACCES``, ``EIO``, a directory in place of the file, ...) are counted in
  :class:`~healer.sources.tailtypes.TailStats`, kept in :attr:`FileTailer.last_error`
  and retried at the next poll; ``poll()`` never raises ``OSError``.
- **Memory** is bounded: one partial line (at most ``max_line_bytes``), one fingerprint
  head, and at most ``max_bytes_per_poll`` of returned blocks per poll.

Resuming after a restart: journal ``TailPosition(identity, parser.checkpoint().offset)``
next to the parser checkpoint, using the identity of the batches that parser was fed
(``tailer.position.identity``), and pass it back as ``start=``. The tailer continues
the same file at that offset; if the file was rotated while healer was down it first
finishes the old file (found by identity among the path's siblings matching
``rotated_glob``) and then starts the new one at 0. Without ``start`` the file at the
path is read from 0 (Vector's ``read_from = beginning``).

Limits: a journaled identity without a fingerprint (nothing but a short partial first
line had been read) matches on device and inode alone; a file whose first line equals
the journaled one *and* that reuses its inode is taken for it; changing
``fingerprint_bytes`` between runs makes every journaled file look new; resuming
inside an over-long line returns the rest of that line as a line of its own.

Driving a parser from the batches:

- ``kind == "lines"``: ``parser.feed(batch.block, batch.offset)``;
- ``kind == "end"``: the file is finished: ``parser.close()``;
- ``kind == "start"``: a new file (or a truncated one) begins at offset 0: make a fresh
  :class:`~healer.parse.SourceParser`.
"""

from __future__ import annotations

import errno
import glob
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from healer.sources.tailtypes import (
    FileIdentity,
    Reason,
    TailBatch,
    TailPosition,
    TailStats,
    fingerprint,
)

__all__ = ["FileTailer", "Opener"]

logger = logging.getLogger(__name__)

Opener = Callable[[Path], int]
"""Opens a path read-only and returns a file descriptor (injectable for tests)."""

_SIBLINGS_CHECKED = 256  # rotated siblings looked at on resume (bounded start-up)
_DETACHED_ERRORS = 3  # read errors on a rotated-away file before it is given up


def _open_readonly(path: Path) -> int:
    # O_NONBLOCK: a FIFO in place of the log must not hang poll().
    return os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)


@dataclass(slots=True, eq=False)
class _Open:
    """A file being read; not-``skipping`` means ``read == done + len(pending)``."""

    fd: int
    identity: FileIdentity
    head: bytes  # the file's first bytes, at most fingerprint_bytes, as last seen
    read: int = 0  # offset of the next byte to read
    done: int = 0  # offset just past what was returned (or skipped)
    pending: bytes = b""  # a partial line, held until its newline
    skipping: bool = False  # inside a cut line: dropping bytes up to its newline
    detached: bool = False  # no longer at the path: read to the end, then finish
    errors: int = 0  # consecutive read errors


class FileTailer:
    """Follow one path: ``poll()`` returns what was appended since the last poll.

    ``start`` is a journaled :class:`TailPosition` (``None``: read whatever is at the
    path from 0). ``max_bytes_per_poll`` bounds one poll (default: 8 chunks); when a
    poll stops at it, :attr:`at_eof` is ``False`` and the caller polls again at once.
    ``rotated_glob`` finds the renamed file on resume (default ``"<name>.*"``, e.g.
    ``virtiofsd.log.1``).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        start: TailPosition | None = None,
        max_line_bytes: int = 65536,
        chunk_size: int = 1 << 20,
        fingerprint_bytes: int = 1024,
        max_bytes_per_poll: int | None = None,
        rotated_glob: str | None = None,
        opener: Opener = _open_readonly,
        stats: TailStats | None = None,
    ) -> None:
        for name, value in (
            ("max_line_bytes", max_line_bytes),
            ("chunk_size", chunk_size),
            ("fingerprint_bytes", fingerprint_bytes),
        ):
            if value < 1:
                msg = f"{name} must be at least 1, got {value}"
                raise ValueError(msg)
        self.path = Path(path)
        self.stats = stats if stats is not None else TailStats()
        self.last_error: OSError | None = None
        self.at_eof = True
        self._max_line = max_line_bytes
        self._chunk = chunk_size
        self._fp_bytes = fingerprint_bytes
        self._per_poll = max_bytes_per_poll if max_bytes_per_poll else 8 * chunk_size
        self._rotated_glob = rotated_glob or glob.escape(self.path.name) + ".*"
        self._opener = opener
        self._budget = 0
        self._cur: _Open | None = None
        self._resume = start if start is not None and start.identity is not None else None
        self._next_reason: Reason = "new" if self._resume is None else "rotated"

    # --- public -------------------------------------------------------------------

    @property
    def position(self) -> TailPosition:
        """The file being followed and the offset just past what was returned."""
        if self._resume is not None:
            return self._resume
        if self._cur is None:
            return TailPosition(None, 0)
        return TailPosition(self._cur.identity, self._cur.done)

    def poll(self) -> list[TailBatch]:
        """Read what is new, without blocking; see the module docstring for the rules."""
        out: list[TailBatch] = []
        self.at_eof = True
        self._budget = self._per_poll
        try:
            resume = self._resume
            if resume is not None:
                if resume.identity is not None and not self._resolve(
                    resume.identity, resume.offset, out
                ):
                    return out
                self._resume = None
            # At most: finish a rotated-away file, then open and read its successor
            # (which may itself have been replaced in between).
            for _ in range(4):
                cur = self._cur if self._cur is not None else self._open_path(out)
                if cur is None:
                    break
                if not cur.detached:
                    self._check_path(cur)
                if not self._read(cur, out):
                    break
                if not cur.detached:
                    break
                self._finish(cur, out, "rotated")
        except OSError as exc:  # a safety net: every call above handles its own errors
            self._error(exc)
        return out

    def close(self) -> None:
        """Close the open descriptor (a later ``poll()`` reopens by path)."""
        if self._cur is not None:
            os.close(self._cur.fd)
            self._resume, self._cur = self.position, None

    def __enter__(self) -> FileTailer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- opening ------------------------------------------------------------------

    def _error(self, exc: OSError) -> None:
        self.stats.read_errors += 1
        self.last_error = exc
        logger.debug("tail %s: %s", self.path, exc)

    def _open(self, path: Path) -> tuple[int, os.stat_result, bytes] | None:
        """Open a regular file and read its head; ``None`` if there is no such file."""
        try:
            fd = self._opener(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                code = errno.EISDIR if stat.S_ISDIR(st.st_mode) else errno.EINVAL
                raise OSError(code, "not a regular file", str(path))
            head = os.pread(fd, self._fp_bytes, 0)
        except OSError:
            os.close(fd)
            raise
        self.stats.files_opened += 1
        return fd, st, head

    def _new(self, fd: int, st: os.stat_result, head: bytes) -> _Open:
        identity = FileIdentity(st.st_dev, st.st_ino, fingerprint(head, self._fp_bytes))
        return _Open(fd, identity, head)

    def _open_path(self, out: list[TailBatch]) -> _Open | None:
        try:
            opened = self._open(self.path)
        except OSError as exc:
            self._error(exc)
            return None
        if opened is None:
            return None
        cur = self._cur = self._new(*opened)
        out.append(TailBatch(cur.identity, 0, kind="start", reason=self._next_reason))
        self._next_reason = "rotated"
        return cur

    def _check_path(self, cur: _Open) -> None:
        """Mark ``cur`` detached if the path now names another file, or none."""
        try:
            st = self.path.stat()
        except (FileNotFoundError, NotADirectoryError):
            cur.detached = True
            return
        except OSError as exc:
            self._error(exc)
            return
        if not cur.identity.same_inode(st):
            cur.detached = True

    def _matches(self, identity: FileIdentity, head: bytes) -> bool:
        known = identity.fingerprint
        return known is None or fingerprint(head, self._fp_bytes) == known

    def _resolve(self, old: FileIdentity, offset: int, out: list[TailBatch]) -> bool:
        """Find the journaled file again; ``False``: not decidable now, retry later."""
        try:
            opened = self._open(self.path)
        except OSError as exc:
            self._error(exc)
            return False
        if opened is not None:
            fd, st, head = opened
            if old.same_inode(st):
                cur = self._cur = self._new(fd, st, head)
                if self._matches(old, head) and st.st_size >= offset:
                    cur.read = cur.done = offset
                    return True
                # Same inode, other content: truncated (copytruncate) while we were down.
                self.stats.truncations += 1
                out.append(TailBatch(old, offset, kind="end", reason="truncated"))
                out.append(TailBatch(cur.identity, 0, kind="start", reason="truncated"))
                return True
            os.close(fd)
        rotated = self._find_rotated(old)
        if rotated is not None:
            fd, st, head = rotated
            cur = self._cur = self._new(fd, st, head)
            cur.read = cur.done = min(offset, st.st_size)
            cur.detached = True
            return True
        self.stats.rotations += 1
        out.append(TailBatch(old, offset, kind="end", reason="missing"))
        return True

    def _find_rotated(self, old: FileIdentity) -> tuple[int, os.stat_result, bytes] | None:
        """The journaled file under another name next to the path, if it is there."""
        try:
            names = sorted(self.path.parent.glob(self._rotated_glob))
        except OSError as exc:
            self._error(exc)
            return None
        for candidate in names[:_SIBLINGS_CHECKED]:
            if candidate == self.path:
                continue
            try:
                if not old.same_inode(candidate.stat()):
                    continue
            except OSError:
                continue
            try:
                opened = self._open(candidate)
            except OSError as exc:
                self._error(exc)
                continue
            if opened is None:
                continue
            fd, st, head = opened
            if old.same_inode(st) and self._matches(old, head):
                return opened
            os.close(fd)
        return None

    # --- reading ------------------------------------------------------------------

    def _read(self, cur: _Open, out: list[TailBatch]) -> bool:
        """Read ``cur`` up to its end; ``False`` if the budget or an error stopped it."""
        try:
            self._check_truncated(cur, out)
            while True:
                if self._budget <= 0:
                    self.at_eof = False
                    return False
                want = min(self._chunk, self._budget)
                data = os.pread(cur.fd, want, cur.read)
                self._budget -= len(data)
                self.stats.bytes_read += len(data)
                if data:
                    self._feed(cur, data, out)
                if len(data) < want:
                    cur.errors = 0
                    return True
        except OSError as exc:
            self._error(exc)
            cur.errors += 1
            # A rotated-away file that keeps failing is given up: the path matters more.
            return cur.detached and cur.errors >= _DETACHED_ERRORS

    def _check_truncated(self, cur: _Open, out: list[TailBatch]) -> None:
        """Restart ``cur`` at 0 if it shrank or its first bytes changed."""
        size = os.fstat(cur.fd).st_size
        replaced = size < cur.read
        if not replaced:
            head = os.pread(cur.fd, self._fp_bytes, 0)
            replaced = not head.startswith(cur.head)
            if not replaced and len(head) > len(cur.head):
                self._set_head(cur, head)
        if not replaced:
            return
        head = os.pread(cur.fd, self._fp_bytes, 0)  # may fail: then nothing changed yet
        self.stats.truncations += 1
        self._end(cur, out, "truncated")
        cur.read = cur.done = 0
        cur.skipping = False
        cur.head = head
        cur.identity = FileIdentity(
            cur.identity.device, cur.identity.inode, fingerprint(head, self._fp_bytes)
        )
        out.append(TailBatch(cur.identity, 0, kind="start", reason="truncated"))

    def _set_head(self, cur: _Open, head: bytes) -> None:
        cur.head = head
        if cur.identity.fingerprint is None:
            fp = fingerprint(head, self._fp_bytes)
            if fp is not None:
                cur.identity = FileIdentity(cur.identity.device, cur.identity.inode, fp)

    def _feed(self, cur: _Open, data: bytes, out: list[TailBatch]) -> None:
        """Split freshly read bytes into blocks of whole lines (same rule as the reader)."""
        at = cur.read
        cur.read += len(data)
        if len(cur.head) < self._fp_bytes and at <= len(cur.head):
            self._set_head(cur, cur.head + data[len(cur.head) - at : self._fp_bytes - at])
        if cur.skipping:
            newline = data.find(b"\n")
            if newline < 0:
                cur.done = cur.read
                return
            data = data[newline + 1 :]
            cur.done = at + newline + 1
            cur.skipping = False
        if cur.pending:
            data = cur.pending + data
        cut = data.rfind(b"\n") + 1
        if cut:
            self._emit(cur, data[:cut], out)
        cur.pending = data[cut:]
        if len(cur.pending) > self._max_line:
            self.stats.lines_cut += 1
            out.append(TailBatch(cur.identity, cur.done, cur.pending[: self._max_line] + b"\n"))
            cur.done = cur.read
            cur.pending = b""
            cur.skipping = True

    def _emit(self, cur: _Open, block: bytes, out: list[TailBatch]) -> None:
        """Return whole lines, cutting over-long ones; a cut line ends its block."""
        limit = self._max_line
        if len(block) <= limit or max(map(len, block.split(b"\n"))) <= limit:
            out.append(TailBatch(cur.identity, cur.done, block))
            cur.done += len(block)
            return
        kept: list[bytes] = []
        start = cur.done
        for line in block[:-1].split(b"\n"):
            if len(line) > limit:
                self.stats.lines_cut += 1
                kept.append(line[:limit])
                out.append(TailBatch(cur.identity, start, b"\n".join(kept) + b"\n"))
                kept = []
                cur.done += len(line) + 1
                start = cur.done
            else:
                kept.append(line)
                cur.done += len(line) + 1
        if kept:
            out.append(TailBatch(cur.identity, start, b"\n".join(kept) + b"\n"))

    def _end(self, cur: _Open, out: list[TailBatch], reason: Reason) -> None:
        """Return the held partial line as a line, then the end marker."""
        if cur.pending:
            self.stats.partial_lines_flushed += 1
            out.append(TailBatch(cur.identity, cur.done, cur.pending + b"\n"))
            cur.done += len(cur.pending)
            cur.pending = b""
        out.append(TailBatch(cur.identity, cur.done, kind="end", reason=reason))

    def _finish(self, cur: _Open, out: list[TailBatch], reason: Reason) -> None:
        self._end(cur, out, reason)
        self.stats.rotations += 1
        os.close(cur.fd)
        self._cur = None
