"""The command line: a thin shell over the pure core.

``main(argv) -> int`` parses arguments, wires files and the terminal to the core, and
turns known errors into a message and an exit code:
0 success, 2 usage error, 3 an input cannot be used, 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import orjson

from healer import __version__
from healer.errors import InputError
from healer.events import KINDS
from healer.output import jsonl_line, table_header, table_line
from healer.replay import Input, ReplaySummary, replay

__all__ = ["EXIT_INPUT", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_INTERRUPTED = 130
PROGRESS_MIN_BYTES = 32 << 20

EXAMPLES = ("incident-docker.log", "incident-vm.sh.log")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="healer",
        description="Watchdog for virtio-fs shares: typed events from VMM, virtiofsd, guest logs.",
    )
    parser.add_argument("--version", action="version", version=f"healer {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    rp = commands.add_parser(
        "replay",
        help="turn captured logs into the typed event stream",
        description=(
            "Read captured logs (plain or gzip; - for standard input) and print their events. "
            "With no FILE, replay the embedded example: the user's real incident."
        ),
    )
    rp.add_argument("files", nargs="*", metavar="FILE")
    rp.add_argument("--format", choices=("table", "jsonl", "counts"), default="table")
    rp.add_argument("--all", action="store_true", help="also show records no parser recognised")
    rp.add_argument(
        "--year",
        type=int,
        default=None,
        help="year for syslog headers, which carry none (default: the current year)",
    )
    rp.add_argument(
        "--no-merge",
        action="store_true",
        help="print sources one after another instead of merged by event time",
    )
    rp.add_argument(
        "--max-line-bytes",
        type=int,
        default=1 << 16,
        help="cut longer lines to this many bytes (counted; default 65536)",
    )
    kinds = commands.add_parser("kinds", help="list the event kinds healer emits")
    kinds.set_defaults(command="kinds")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``healer`` console script and ``python -m healer``."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "kinds":
            for name, cls in KINDS.items():
                doc = (cls.__doc__ or "").strip().splitlines()[0]
                print(f"{name:<28} {doc}")
            return EXIT_OK
        return _replay(args)
    except InputError as exc:
        print(f"healer: {exc.path}: {exc.problem}\n  hint: {exc.hint}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (| head); not an error
        return EXIT_OK


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


def _replay(args: argparse.Namespace) -> int:
    if args.max_line_bytes < 256:
        raise InputError("--max-line-bytes", "must be at least 256", "pass a larger limit")
    inputs = _inputs(args.files)
    summary = ReplaySummary()
    out = sys.stdout.buffer
    total = sum(Path(i.path).stat().st_size for i in inputs if i.path and Path(i.path).exists())
    with _progress(total) as progress:
        events = replay(
            inputs,
            default_year=args.year or datetime.now(UTC).year,
            keep_unrecognized=args.all,
            merge=bool(args.files) and not args.no_merge,
            max_line_bytes=args.max_line_bytes,
            summary=summary,
            progress=progress,
        )
        if args.format == "jsonl":
            for item in events:
                out.write(jsonl_line(item))
        elif args.format == "table":
            out.write(table_header().encode() + b"\n")
            for item in events:
                out.write(table_line(item).encode() + b"\n")
        else:
            for _ in events:
                pass
            out.write(orjson.dumps(summary.as_counts()) + b"\n")
    out.flush()
    counts = summary.as_counts()
    if args.format != "counts" and sys.stderr.isatty():
        print(
            f"healer: {counts['lines']} lines, {counts['events']} events, "
            f"{counts['unparsed']} lines not recognised",
            file=sys.stderr,
        )
    return EXIT_OK


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], object] | None]:
    """A byte progress bar on stderr, only for a terminal and a large input."""
    if total < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm  # noqa: PLC0415 - imported only when shown: keeps start-up fast

    with tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr, leave=False) as bar:
        yield bar.update
