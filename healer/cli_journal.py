"""``healer journal``: a journal read as an operator reads ``journalctl -f``.

Running healer or not, the journal is read only (:class:`healer.journal.JournalTail`)
and shown as a timeline: events, decisions, phase changes and outcomes (the rows of
``healer replay --journal``), and what only a journal holds: healer's starts, the
operator's commands and healer's notes on its own state. Offsets and ticks are
bookkeeping and not shown. ``--share`` and ``--since`` filter; ``--follow`` prints
what is appended until interrupted.

An outcome and a start carry no time of their own in the journal: a row without one
is placed, for ``--since``, at the time of the row before it.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, BinaryIO

import orjson

from healer.engine.model import Decision, Transition
from healer.errors import InputError
from healer.events import Event
from healer.eventtime import parse_iso
from healer.journal import NoteRecord, OperatorRecord, Record, StartRecord
from healer.journal.records import encode
from healer.journal.store import JournalTail
from healer.output import iso_time, jsonl_dict, table_header, table_line
from healer.pipeline.recorded import AsRecorded
from healer.timeline import Outcome, TimelineItem

__all__ = [
    "Row",
    "Rows",
    "add_journal_command",
    "jsonl_row",
    "parse_since",
    "run_journal",
    "table_row",
]

FOLLOW_POLL_S = 0.2
"""How often ``--follow`` looks for appended records."""
FOLLOW_LINES = 10
"""Rows shown before following, as ``journalctl -f`` does, unless --lines says."""

JournalOnly = StartRecord | OperatorRecord | NoteRecord
_RELATIVE = re.compile(r"-?(\d+(?:\.\d+)?)\s*(s|sec|min|m|h|d)(?:\s+ago)?$")
_UNIT_S = {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True, slots=True)
class Row:
    """One thing the journal says, with its seq, its time (epoch seconds, or the time
    of the row before it when it has none) and the share it is about (None: healer)."""

    seq: int
    time: float | None
    share: str | None
    item: TimelineItem | JournalOnly


class Rows:
    """Journal records to rows, in journal order, across calls (for --follow): an
    outcome is paired with its decision, a row without a time takes the one before."""

    def __init__(self) -> None:
        self.recorded = AsRecorded()
        self.last: float | None = None

    def of(self, records: Iterable[tuple[int, Record]]) -> Iterator[Row]:
        """The rows of ``records``; bookkeeping records (offsets, ticks) make none."""
        for seq, record in records:
            item: TimelineItem | JournalOnly | None
            item = record if isinstance(record, JournalOnly) else self.recorded.item(record)
            if item is None:
                continue
            own = _time(item)
            self.last = own if own is not None else self.last
            yield Row(seq, self.last, _share(item), item)


def _time(item: TimelineItem | JournalOnly) -> float | None:
    if isinstance(item, Event):
        return item.time.timestamp() if item.time is not None else None
    if isinstance(item, Decision | Transition):
        return item.time
    if isinstance(item, Outcome):
        return item.decision.time if item.decision is not None else None
    if isinstance(item, OperatorRecord):
        return item.time
    return None


def _share(item: TimelineItem | JournalOnly) -> str | None:
    if isinstance(item, Event | Decision | Transition | OperatorRecord | NoteRecord):
        return item.share or None
    if isinstance(item, Outcome):
        return item.decision.share if item.decision is not None else None
    return None


def parse_since(text: str, now: datetime) -> datetime:
    """``--since``: RFC 3339 (no zone means UTC, like healer's output), a date,
    ``today``, ``yesterday``, or a span back from ``now`` (``-10min``, ``2h ago``)."""
    word = text.strip().lower()
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if word == "today":
        return midnight
    if word == "yesterday":
        return midnight - timedelta(days=1)
    relative = _RELATIVE.match(word)
    if relative is not None:
        return now - timedelta(seconds=float(relative.group(1)) * _UNIT_S[relative.group(2)])
    if re.fullmatch(r"\d{4}-\d\d-\d\d", word):
        word += "T00:00:00"
    elif re.fullmatch(r"\d{4}-\d\d-\d\d[t ]\d\d:\d\d", word):
        word += ":00"
    stamp = parse_iso(word.upper())
    if stamp is None:
        msg = (
            f"--since {text!r} is not a time: use RFC 3339 (2026-12-04T10:00:00Z), "
            "a date, today, yesterday, or a span back (-10min, 2h ago)"
        )
        raise ValueError(msg)
    return stamp


def table_row(row: Row) -> str:
    """A row of the table ``healer replay`` prints, for every kind of row."""
    item = row.item
    if not isinstance(item, JournalOnly):
        return table_line(item, recorded=True)
    when = iso_time(item.time) if isinstance(item, OperatorRecord) else None
    match item:
        case StartRecord():
            where, what = "healer", "** healer started"
            details = f"pid={item.pid} version={item.healer or '-'} rules={item.rules}"
            details += f" config={item.config}" if item.config else ""
        case OperatorRecord():
            where, what = f"operator:uid={item.uid}", f"!! {item.command}"
            details = f"share={item.share} pid={item.pid}" + (
                f" {item.detail}" if item.detail else ""
            )
        case NoteRecord():
            where, what = "healer", f".. {item.what}"
            details = (f"share={item.share} " if item.share else "") + item.detail
    return f"{when or '':<27} {where:<30} {'':<5} {what:<28} {details}".rstrip()


def jsonl_row(row: Row) -> bytes:
    """One JSON object per row: ``healer replay --journal --format jsonl``'s, or the
    journal-only record's fields, with ``"seq"`` after ``"type"``."""
    item = row.item
    if isinstance(item, JournalOnly):
        data = encode(item)  # the journal's own form, less its version
        del data["v"]
        if isinstance(item, OperatorRecord):
            data["time"] = iso_time(item.time)
    else:
        data = jsonl_dict(item, recorded=True)
    head = {"type": data.pop("type"), "seq": row.seq}
    return orjson.dumps({**head, **data}) + b"\n"


def add_journal_command(
    commands: argparse._SubParsersAction[Any], *, examples: Callable[..., str]
) -> None:
    journal = commands.add_parser(
        "journal",
        help="read a healer's journal, running or not (like journalctl)",
        description=(
            "Print what a journal holds: events, decisions, phase changes and outcomes, "
            "healer's starts, the operator's commands and healer's notes. Read only; "
            "healer may be running. Times are UTC."
        ),
        epilog=examples(
            "healer journal --config /etc/healer/healer.toml --share fs0 --since '1h ago'",
            "healer journal --config /etc/healer/healer.toml --follow",
            "healer journal --journal /var/lib/healer/journal --format jsonl | jq .type",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    where = journal.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", metavar="CONFIG", help="the journal of this configuration")
    where.add_argument("--journal", metavar="DIR", help="a journal directory")
    journal.add_argument("--share", metavar="SHARE", help="only rows about SHARE (and starts)")
    journal.add_argument(
        "--since",
        metavar="TIME",
        help="only rows from TIME on: 2026-12-04T10:00:00Z, 2026-12-04, today, yesterday, "
        "'10min ago', --since=-2h (no zone means UTC)",
    )
    journal.add_argument(
        "-f", "--follow", action="store_true", help="keep printing what is appended (Ctrl-C ends)"
    )
    journal.add_argument(
        "-n",
        "--lines",
        type=int,
        metavar="N",
        help=f"only the last N rows before following (default: all; {FOLLOW_LINES} with -f)",
    )
    journal.add_argument(
        "--format",
        choices=("table", "jsonl"),
        default="table",
        help="table: for people (default); jsonl: one JSON object per row, with its seq",
    )


def run_journal(
    args: argparse.Namespace,
    *,
    out: BinaryIO | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print the journal's rows; with --follow, until interrupted (KeyboardInterrupt)."""
    from healer.config import load_config  # noqa: PLC0415 - every command builds this parser

    directory = Path(args.journal if args.journal else load_config(args.config).journal)
    if not directory.is_dir() or not (args.follow or any(directory.glob("segment-*.jsonl"))):
        problem = "no such journal" if not directory.is_dir() else "no journal segments in it"
        raise InputError(str(directory), problem, "name a healer journal directory (or --config)")
    try:
        since = parse_since(args.since, now()).timestamp() if args.since else None
    except ValueError as exc:
        raise InputError("--since", str(exc), "see `healer journal --help`") from None
    stream = out or sys.stdout.buffer
    form = table_row if args.format == "table" else None
    tail, rows = JournalTail(directory), Rows()

    def wanted(row: Row) -> bool:
        if args.share and row.share not in (None, args.share):
            return False
        if args.share and row.share is None and not isinstance(row.item, StartRecord):
            return False
        return since is None or (row.time is not None and row.time >= since)

    def write(rows: Iterable[Row]) -> None:
        for row in rows:
            stream.write((form(row) + "\n").encode() if form else jsonl_row(row))
        stream.flush()

    if form is not None:
        stream.write((table_header() + "\n").encode())
    limit = args.lines if args.lines is not None else (FOLLOW_LINES if args.follow else None)
    first = (row for row in rows.of(tail.read()) if wanted(row))
    write(deque(first, maxlen=limit) if limit is not None else first)
    while args.follow:
        sleep(FOLLOW_POLL_S)
        write(row for row in rows.of(tail.read()) if wanted(row))
    return 0
