"""The command line: a thin shell over the core and the replay library.

``main(argv) -> int`` parses arguments, runs the command and turns known errors into
a message and an exit code: 0 success, 2 usage error, 3 an input cannot be used,
4 the rules cannot be used, 130 interrupted. ``healer replay`` is
:mod:`healer.cli_replay` over :mod:`healer.pipeline`; ``check``, ``kinds``,
``watch`` and ``demo`` are here.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from healer import __version__
from healer.cli_replay import run_replay
from healer.config import ConfigError, is_loopback, load_config
from healer.engine.rules import describe
from healer.errors import HealerError, InputError
from healer.events import KINDS
from healer.journal import JournalBusy, JournalCorrupt
from healer.rulefiles import default_rules_dir, load_rules
from healer.supervise.process import hidden_readiness
from healer.tomlspot import LocatedError

__all__ = ["EXIT_CONFIG", "EXIT_INPUT", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_CONFIG = 4
EXIT_BUSY = 5  # another healer holds the journal
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


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
    rp.set_defaults(usage=rp)  # flag combinations are checked later, with this usage line
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
    hold = commands.add_parser(
        "hold",
        help="keep the shares' sockets and virtiofsd (the holder; systemd starts it)",
        description=(
            "Run the holder of CONFIG's shares in the foreground: it owns the listening "
            "sockets and is the parent of every virtiofsd, so they outlive `healer watch`. "
            "`healer watch` starts one itself when none runs."
        ),
    )
    hold.add_argument("--config", required=True, metavar="CONFIG")
    stop = commands.add_parser(
        "stop",
        help="stop everything of CONFIG: healer, every virtiofsd, the sockets",
        description=(
            "Stop `healer watch` for CONFIG (SIGTERM), then have the holder stop every "
            "virtiofsd and remove the sockets. (SIGTERM to `healer watch` alone leaves the "
            "daemons serving for the next healer.)"
        ),
    )
    stop.add_argument("--config", required=True, metavar="CONFIG")
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
        if args.command in ("watch", "hold", "stop"):
            from healer.live import run  # noqa: PLC0415 - the live parts are not needed to replay

            command = {"watch": run.watch, "hold": run.hold, "stop": run.stop}[args.command]
            return command(args.config)
        if args.command == "demo":
            from healer.demo import run_demo  # noqa: PLC0415 - the live parts only here

            return run_demo(keep=Path(args.keep) if args.keep else None, bound_s=args.bound)
        return run_replay(args.usage, args)
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
    except JournalBusy as exc:
        print(f"healer: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except HealerError as exc:  # the holder cannot be reached, and the like
        print(f"healer: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (| head); not an error
        return EXIT_OK


def _check(path: str | None) -> int:
    """Validate a configuration or rules; print what they do, or every problem located."""
    root = Path(path) if path else default_rules_dir()
    if root.is_file() and _is_config(root):
        config = load_config(root)  # ConfigError is reported by main()
        print(f"{root}: {len(config.shares)} shares, journal {config.journal}")
        for share in config.shares:
            print(f"  share {share.name}: tag {share.tag}, socket {share.socket}, {share.mode}")
            for problem in hidden_readiness(share.virtiofsd):
                print(f"  warning: share {share.name}: virtiofsd {problem}")
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


def _is_config(path: Path) -> bool:
    """A watchdog configuration names shares; a rules file names rules."""
    text = path.read_text(encoding="utf-8", errors="replace")
    return re.search(r"^\s*\[\[share\]\]|^\s*\[healer\]", text, re.M) is not None
