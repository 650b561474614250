"""A log pasted with a margin: every line indented alike (a mail, a markdown list item).

Record framing reads an indented line as the continuation of the record above it
(a chain item, a wrapped message). Indent a whole log four spaces and every line
continues the first: nine records read as one. A real log's first line is never a
continuation, so when a source's first lines all start with the same run of blanks,
that run is a margin the reporter added, not indentation the programs wrote: it is
taken off every line that has it, and what is indented past it still continues.

Learned only from a source's start (replay's prescan, see
``SourceParser.learn_clocks``): a tail that starts in the middle of a log may start on
a real continuation line.
"""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["Margin", "learn_margin"]

_BLANKS = b" \t"
MAX_MARGIN = 16
"""Longest margin taken off; a deeper first line is read as it is."""


def learn_margin(sample: bytes) -> bytes:
    """The blanks every non-blank line of ``sample`` (whole lines) starts with, when
    its first non-blank line starts with blanks; else ``b""``."""
    lines = [line.rstrip(b"\r") for line in sample.split(b"\n")[:-1]]
    lines = [line for line in lines if line.strip()]
    if not lines or lines[0][:1] not in (b" ", b"\t"):
        return b""
    first = lines[0]
    margin = first[: len(first) - len(first.lstrip(_BLANKS))][:MAX_MARGIN]
    for line in lines[1:]:
        while margin and not line.startswith(margin):
            margin = margin[:-1]
    return margin


class Margin:
    """Takes a margin off a block's lines and maps positions back to the file's."""

    __slots__ = ("_shifted", "margin")

    def __init__(self, margin: bytes) -> None:
        self.margin = margin
        self._shifted: list[int] = []  # where each line that lost the margin now starts

    def strip(self, block: bytes) -> bytes:
        """``block`` (whole lines) with the margin off every line that starts with it
        and has more to say (a line of blanks stays what it was: blank)."""
        size = len(self.margin)
        shifted: list[int] = []
        out: list[bytes] = []
        pos = 0
        for line in block.split(b"\n")[:-1]:
            kept = line
            if line.startswith(self.margin) and line[size:].strip():
                shifted.append(pos)
                kept = line[size:]
            out.append(kept)
            pos += len(kept) + 1
        self._shifted = shifted
        out.append(b"")
        return b"\n".join(out)

    def position(self, pos: int) -> int:
        """The position in the original block of a line start ``pos`` of the stripped
        one (the record's byte offset points at its line as the file has it)."""
        return pos + len(self.margin) * bisect_left(self._shifted, pos)
