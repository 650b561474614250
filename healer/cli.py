"""The command line: a thin shell over the pure core.

``main(argv) -> int`` parses arguments, wires files and the terminal to the core, and
turns known errors into a message and an exit code:
0 success, 2 usage error, 3 an input cannot be used, 4 the rules cannot be used,
130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from healer import __version__
from healer.config import ConfigError, is_loopback, load_config
from healer.engine import Engine
from healer.engine.rules import default_rules_dir, describe, load_rules
from healer.errors import InputError
from healer.events import KINDS, Event
from healer.journal import Journal, JournalCorrupt
from healer.observe import NULL_OBSERVER, Observer
from healer.output import Printable, jsonl_line, table_header, table_line
from healer.parse import Unrecognized
from healer.replay import Input, ReplaySummary, decide, journal_events, replay
from healer.runner import Runner
from healer.tomlspot import LocatedError

if TYPE_CHECKING:
    from healer.metrics import HealerMetrics

__all__ = ["EXIT_CONFIG", "EXIT_INPUT", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_CONFIG = 4
EXIT_INTERRUPTED = 130
PROGRESS_MIN_BYTES = 32 << 20

EXAMPLES = ("incident-docker.log",)


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
    rules = rp.add_mutually_exclusive_group()
    rules.add_argument(
        "--rules", metavar="DIR", help="evaluate these rules (default: the shipped rules)"
    )
    rules.add_argument("--no-rules", action="store_true", help="print events only")
    rp.add_argument(
        "--journal",
        metavar="PATH",
        help="replay the events of a recorded journal (directory or segment) instead of logs",
    )
    rp.add_argument("--write-journal", metavar="DIR", help="record the replay in a journal")
    rp.add_argument(
        "--metrics",
        metavar="FILE",
        help="write the replay's Prometheus metrics to FILE (text exposition format)",
    )
    rp.add_argument(
        "--report", metavar="FILE", help="write a postmortem report (Markdown; HTML for .html)"
    )
    rp.add_argument(
        "--what-if",
        metavar="DIR",
        help="also run these rules and report how their decisions differ (with --report)",
    )
    check = commands.add_parser(
        "check",
        help="validate rules and explain what they do",
        description=(
            "Validate a rules directory or file, or a watchdog configuration and the rules "
            "it names; exit 4 on any problem."
        ),
    )
    check.add_argument("path", nargs="?", metavar="RULES_DIR|RULES_FILE|CONFIG")
    watch = commands.add_parser(
        "watch",
        help="supervise virtiofsd and heal the configured shares (live)",
        description="Run the watchdog for the shares in CONFIG until SIGTERM or SIGINT.",
    )
    watch.add_argument("--config", required=True, metavar="CONFIG")
    demo = commands.add_parser(
        "demo",
        help="heal injected faults on a throwaway share, live (needs virtiofsd)",
        description=(
            "Start a temporary share under supervision with the cloud-hypervisor stand-in as "
            "VMM, kill virtiofsd, reboot the guest, cause a restart storm, and show the "
            "healing as it is journaled; exit 1 if a fault was not healed, 3 without virtiofsd."
        ),
    )
    demo.add_argument("--keep", metavar="DIR", help="put the demo's files here and keep them")
    demo.add_argument(
        "--bound", type=float, default=30.0, metavar="SECONDS", help="wait per fault at most"
    )
    commands.add_parser("kinds", help="list the event kinds healer emits")
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
        if args.command == "check":
            return _check(args.path)
        if args.command == "watch":
            return _watch(args.config)
        if args.command == "demo":
            from healer.demo import run_demo  # noqa: PLC0415 - the live parts only here

            return run_demo(keep=Path(args.keep) if args.keep else None, bound_s=args.bound)
        return _replay(args)
    except InputError as exc:
        print(f"healer: {exc.path}: {exc.problem}\n  hint: {exc.hint}", file=sys.stderr)
        return EXIT_INPUT
    except LocatedError as exc:
        what = "configuration" if isinstance(exc, ConfigError) else "rules"
        print(f"healer: the {what} cannot be used:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except JournalCorrupt as exc:
        print(f"healer: {exc}", file=sys.stderr)
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


def _check(path: str | None) -> int:
    """Validate a configuration or rules; print what they do, or every problem located."""
    root = Path(path) if path else default_rules_dir()
    if root.is_file() and _is_config(root):
        config = load_config(root)  # ConfigError is reported by main()
        print(f"{root}: {len(config.shares)} shares, journal {config.journal}")
        for share in config.shares:
            print(f"  share {share.name}: tag {share.tag}, socket {share.socket}, {share.mode}")
        if not is_loopback(config.metrics):
            print(f"  note: metrics listen on {config.metrics}, beyond loopback")
        print(f"  metrics: {f'http://{config.metrics}/metrics' if config.metrics else 'off'}")
        if config.metrics_textfile:
            print(f"  metrics textfile: {config.metrics_textfile} (every 10 s)")
        root = Path(config.rules) if config.rules else default_rules_dir()
    rules = load_rules(root)
    print(f"{root}: {len(rules.rules)} rules, digest {rules.digest}")
    for rule_id, text in describe(rules).items():
        print(f"  {rule_id}: {text}")
    policy = rules.policy
    print(
        f"  policy: respawn backoff {policy.backoff_initial_s:g} s doubling to "
        f"{policy.backoff_max_s:g} s (+{policy.backoff_jitter:.0%} jitter), reset after "
        f"{policy.healthy_after_s:g} s healthy; circuit retry every {policy.circuit_retry_s:g} s"
    )
    return EXIT_OK


def _watch(path: str) -> int:
    """Load and check everything first; only a valid setup starts supervising."""
    from healer.watch import Watchdog  # noqa: PLC0415 - the live loop is not needed to replay

    config = load_config(path)
    rules = load_rules(config.rules or default_rules_dir())
    logging.basicConfig(level=logging.INFO, format="healer: %(levelname)s %(message)s")
    logging.getLogger("watchfiles").setLevel(logging.WARNING)  # one line per change otherwise
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    return Watchdog(config, rules).serve(stop)


def _is_config(path: Path) -> bool:
    """A watchdog configuration names shares; a rules file names rules."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return re.search(r"^\s*\[\[share\]\]|^\s*\[healer\]", text, re.M) is not None


def _replay(args: argparse.Namespace) -> int:
    if args.max_line_bytes < 256:
        raise InputError("--max-line-bytes", "must be at least 256", "pass a larger limit")
    if args.what_if and not args.report:
        raise InputError("--what-if", "needs --report FILE", "add --report what-if.md")
    if args.no_rules and (args.report or args.write_journal):
        raise InputError("--no-rules", "reports and journals need rules", "drop --no-rules")
    metrics = _replay_metrics(args)
    observer: Observer = metrics if metrics is not None else NULL_OBSERVER
    runner = None if args.no_rules else _runner(args.rules, args.write_journal, observer)
    other = _runner(args.what_if, None) if args.what_if else None
    summary = ReplaySummary()
    out = sys.stdout.buffer
    source: Iterable[Event | Unrecognized]
    if args.journal:
        inputs: list[Input] = []
        total = 0
        source = journal_events(args.journal)
    else:
        inputs = _inputs(args.files)
        total = sum(Path(i.path).stat().st_size for i in inputs if i.path and Path(i.path).exists())
    with _progress(total) as progress:
        if not args.journal:
            source = replay(
                inputs,
                default_year=args.year or datetime.now(UTC).year,
                keep_unrecognized=args.all,
                merge=bool(args.files) and not args.no_merge,
                max_line_bytes=args.max_line_bytes,
                summary=summary,
                progress=progress,
            )
        stream: Iterable[Printable] = source if runner is None else decide(source, runner)
        collectors = _collectors(args.report, other)
        if args.format == "jsonl":
            for item in stream:
                collectors.add(item)
                out.write(jsonl_line(item))
        elif args.format == "table":
            out.write(table_header().encode() + b"\n")
            for item in stream:
                collectors.add(item)
                out.write(table_line(item).encode() + b"\n")
        else:
            for item in stream:
                collectors.add(item)
            counts = summary.as_counts()
            if runner is not None:
                counts["decisions"] = runner.stats.decisions
            out.write(orjson.dumps(counts) + b"\n")
    out.flush()
    if runner is not None and runner.journal is not None:
        runner.journal.close()
    if metrics is not None:
        _write_metrics(args.metrics, metrics, summary, counted_events=runner is not None)
    if args.report:
        _write_report(args, runner, other, collectors, inputs)
    counts = summary.as_counts()
    if args.format != "counts" and sys.stderr.isatty():
        print(
            f"healer: {counts['lines']} lines, {counts['events']} events, "
            f"{counts['unparsed']} lines not recognised",
            file=sys.stderr,
        )
    return EXIT_OK


def _replay_metrics(args: argparse.Namespace) -> HealerMetrics | None:
    if not args.metrics:
        return None
    target = Path(args.metrics)
    if not target.parent.is_dir():
        raise InputError(args.metrics, "its directory does not exist", "create it first")
    from healer.metrics import HealerMetrics  # noqa: PLC0415 - only when asked for

    rules = load_rules(args.rules or default_rules_dir())
    return HealerMetrics(rules.policy, sources=[i.name for i in _named_inputs(args)])


def _named_inputs(args: argparse.Namespace) -> list[Input]:
    return (
        []
        if args.journal
        else [Input(f, f) for f in args.files] or [Input(name, None) for name in EXAMPLES]
    )


def _write_metrics(
    path: str, metrics: HealerMetrics, summary: ReplaySummary, *, counted_events: bool
) -> None:
    """What the replay counted, in the exposition format (atomically, like a textfile)."""
    from healer.metrics import write_textfile  # noqa: PLC0415 - only when asked for

    for source, stats in summary.parse.items():
        metrics.lines(source, stats.lines, stats.unparsed_lines)
    if not counted_events:  # --no-rules: no runner told the metrics about events
        for kind, count in summary.kinds.items():
            metrics.events.labels(kind).inc(count)
    try:
        write_textfile(metrics.registry, path)
    except OSError as exc:
        raise InputError(path, f"cannot be written: {exc.strerror}", "check the path") from exc
    print(f"healer: metrics written to {path}", file=sys.stderr)


def _runner(
    rules_dir: str | None, journal_dir: str | None, observer: Observer = NULL_OBSERVER
) -> Runner:
    rules = load_rules(rules_dir or default_rules_dir())
    # A replay executes nothing, so nothing must be durable before an action:
    # its journal is synced once, when it is closed.
    if journal_dir and any(Path(journal_dir).glob("segment-*")):
        raise InputError(
            journal_dir, "already holds a journal", "write a replay to a new directory"
        )
    journal = Journal(journal_dir, fsync="never") if journal_dir else None
    runner = Runner(Engine(rules), journal, observer=observer)
    runner.start()
    return runner


class _Collectors:
    """Feeds the report collector, and the what-if engine with its own collector."""

    def __init__(self, main: Any, other: Runner | None, other_collector: Any) -> None:
        self.main = main
        self.other = other
        self.other_collector = other_collector

    def add(self, item: Printable) -> None:
        if self.main is None:
            return
        self.main.add(item)
        if self.other is not None and isinstance(item, Event):
            self.other_collector.add(item)
            for out in self.other.ingest((item,)):
                self.other_collector.add(out)


def _collectors(report: str | None, other: Runner | None) -> _Collectors:
    if not report:
        return _Collectors(None, None, None)
    from healer.report import Collector  # noqa: PLC0415 - only when a report is asked for

    return _Collectors(Collector(), other, Collector() if other else None)


def _write_report(
    args: argparse.Namespace,
    runner: Runner | None,
    other: Runner | None,
    collectors: _Collectors,
    inputs: list[Input],
) -> None:
    from healer.report import (  # noqa: PLC0415 - only when a report is asked for
        render_html,
        render_markdown,
        what_if,
        what_if_html,
    )

    postmortem = collectors.main.finish()
    names = [i.name for i in inputs] or [args.journal]
    digest = runner.engine.rules.digest if runner else ""
    html = args.report.endswith((".html", ".htm"))
    if other is None:
        comparison = ""
    else:
        labels = {"a_label": args.rules or "shipped rules", "b_label": args.what_if}
        compare = what_if_html if html else what_if
        comparison = compare(postmortem, collectors.other_collector.finish(), **labels)
    if html:
        text = render_html(postmortem, rules_digest=digest, inputs=names, appendix=comparison)
    else:
        text = render_markdown(postmortem, rules_digest=digest, inputs=names)
        text += "\n" + comparison if comparison else ""
    Path(args.report).write_text(text, encoding="utf-8")
    print(f"healer: report written to {args.report}", file=sys.stderr)


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], object] | None]:
    """A byte progress bar on stderr, only for a terminal and a large input."""
    if total < PROGRESS_MIN_BYTES or not sys.stderr.isatty():
        yield None
        return
    from tqdm import tqdm  # noqa: PLC0415 - imported only when shown: keeps start-up fast

    with tqdm(total=total, unit="B", unit_scale=True, file=sys.stderr, leave=False) as bar:
        yield bar.update
