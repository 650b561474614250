"""``healer replay`` on the command line: flags to one pipeline call, its items to stdout.

Everything a replay does is :mod:`healer.pipeline`; this module checks the flags
(usage errors exit 2 with argparse's usage line), checks where the outputs go before
anything runs, prints the timeline as it streams and writes the report and metrics
files at the end. :func:`healer.cli.main` turns the errors into exit codes.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import BinaryIO

import orjson

from healer.errors import InputError
from healer.output import jsonl_line, table_header, table_line
from healer.pipeline import (
    Input,
    ReplayResult,
    Sink,
    redecision_note,
    render_report,
    replay_journal,
    replay_logs,
)
from healer.rulefiles import default_rules_dir, load_rules
from healer.timeline import TimelineItem

__all__ = ["EXAMPLES", "run_replay"]

EXAMPLES = ("incident-docker.log",)
PROGRESS_MIN_BYTES = 32 << 20


def run_replay(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run ``healer replay``; errors are raised for :func:`healer.cli.main` to report."""
    _check_flags(parser, args)
    # Rules are loaded once, and only when something decides: a journal as recorded
    # needs none (its decisions are its own).
    decides = not args.no_rules and not (args.journal and not args.rules)
    rules = load_rules(args.rules or default_rules_dir()) if decides else None
    other = load_rules(args.what_if) if args.what_if else None
    for target in (args.report, args.metrics):
        if target:
            _check_output(target)
    out = sys.stdout.buffer
    printer = _Printer(out, args.format, recorded=bool(args.journal) and rules is None)
    if args.journal:
        result = replay_journal(
            args.journal,
            rules=rules,
            events_only=args.no_rules,
            write_journal=args.write_journal,
            report=bool(args.report),
            what_if=other,
            metrics=bool(args.metrics),
            sink=printer.sink,
        )
    else:
        inputs = _inputs(args.files)
        with _progress(_size(inputs)) as progress:
            result = replay_logs(
                inputs,
                rules,
                year=args.year or datetime.now(UTC).year,
                keep_unrecognized=args.all,
                merge=bool(args.files) and not args.no_merge,
                max_line_bytes=args.max_line_bytes,
                write_journal=args.write_journal,
                report=bool(args.report),
                what_if=other,
                metrics=bool(args.metrics),
                sink=printer.sink,
                progress=progress,
            )
    printer.close(result)
    out.flush()
    note = redecision_note(result)
    if note:
        print(f"healer: {note}", file=sys.stderr)
    if args.metrics:
        _write_metrics(args.metrics, result)
    if args.report:
        _write_report(args, result)
    counts = result.counts.as_dict()
    if args.format != "counts" and sys.stderr.isatty() and "lines" in counts:
        print(
            f"healer: {counts['lines']} lines, {counts['events']} events, "
            f"{counts['unparsed']} lines not recognised",
            file=sys.stderr,
        )
    return 0


def _check_flags(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Flags that cannot go together are usage errors: argparse's usage line, exit 2."""
    if args.max_line_bytes < 256:
        parser.error("--max-line-bytes must be at least 256")
    if args.what_if and not args.report:
        parser.error("--what-if needs --report FILE (the comparison is part of the report)")
    if args.no_rules and (args.report or args.write_journal or args.what_if):
        parser.error("--no-rules prints events only: drop it for --report or --write-journal")
    if args.journal and args.files:
        parser.error("--journal replays a journal instead of FILEs: give one or the other")
    if args.journal and args.write_journal and not args.rules:
        parser.error("--journal with --write-journal needs --rules DIR to decide again")


def _check_output(path: str) -> None:
    """A report or metrics file must be writable before the replay, not after it.

    The check writes: a probe file is created (and removed) beside the target, since
    permission bits say nothing for root or for filesystems like /proc.
    """
    target = Path(path)
    hint = "name a file in a directory you can write"
    if target.is_dir():
        raise InputError(path, "is a directory", hint)
    if not target.parent.is_dir():
        if target.parent.exists():
            raise InputError(path, f"{target.parent} is not a directory", hint)
        raise InputError(path, "its directory does not exist", f"create it first, or {hint}")
    try:
        if target.exists():
            with target.open("ab"):
                pass
        fd, probe = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
        os.close(fd)
        Path(probe).unlink()
    except OSError as exc:
        raise InputError(path, f"cannot be written: {exc.strerror}", hint) from exc


def _inputs(files: list[str]) -> list[Input]:
    if not files:
        print(
            "healer: no FILE given, replaying the embedded example incident "
            "(pass - to read standard input)",
            file=sys.stderr,
        )
        folder = resources.files("healer") / "examples"
        return [Input(name, str(folder / name)) for name in EXAMPLES]
    if files.count("-") > 1:
        raise InputError("-", "named more than once", "standard input can be read only once")
    return [Input("stdin", None) if f == "-" else Input(f, f) for f in files]


def _size(inputs: list[Input]) -> int:
    paths = (Path(i.path) for i in inputs if i.path)
    return sum(p.stat().st_size for p in paths if p.is_file())


class _Printer:
    """The timeline on stdout as it streams; the table's header comes with the first row
    (so an input that cannot be used fails before anything is printed)."""

    def __init__(self, out: BinaryIO, form: str, *, recorded: bool) -> None:
        self.out = out
        self.form = form
        self.recorded = recorded
        self.headed = False
        self.sink: Sink | None = {"jsonl": self._jsonl, "table": self._table}.get(form)

    def _jsonl(self, item: TimelineItem) -> None:
        self.out.write(jsonl_line(item, recorded=self.recorded))

    def _head(self) -> None:
        self.headed = True
        self.out.write(table_header().encode() + b"\n")

    def _table(self, item: TimelineItem) -> None:
        if not self.headed:
            self._head()
        self.out.write(table_line(item, recorded=self.recorded).encode() + b"\n")

    def close(self, result: ReplayResult) -> None:
        if self.form == "table" and not self.headed:
            self._head()
        elif self.form == "counts":
            self.out.write(orjson.dumps(result.counts.as_dict()) + b"\n")


def _write_metrics(path: str, result: ReplayResult) -> None:
    """What the replay counted, in the exposition format (atomically, like a textfile)."""
    from healer.metrics import write_textfile  # noqa: PLC0415 - only when asked for

    if result.metrics is None:
        return
    try:
        write_textfile(result.metrics.registry, path)
    except OSError as exc:
        raise InputError(path, f"cannot be written: {exc.strerror}", "check the path") from exc
    print(f"healer: metrics written to {path}", file=sys.stderr)


def _write_report(args: argparse.Namespace, result: ReplayResult) -> None:
    report: str = args.report
    a_label = "the journal as recorded" if result.recorded else args.rules or "shipped rules"
    text = render_report(
        result,
        html=report.endswith((".html", ".htm")),
        a_label=a_label,
        b_label=args.what_if,
    )
    try:
        Path(report).write_text(text, encoding="utf-8")
    except OSError as exc:
        raise InputError(report, f"cannot be written: {exc.strerror}", "check the path") from exc
    print(f"healer: report written to {report}", file=sys.stderr)


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], object] | None]:
    """A byte progress bar on stderr, only for a terminal and a large input."""
    if total < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm  # noqa: PLC0415 - imported only when shown: keeps start-up fast

    with tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr, leave=False) as bar:
        yield bar.update
