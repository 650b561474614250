"""The command line: a thin shell over the core and the replay library.

``main(argv) -> int`` parses arguments, runs the command and turns known errors into
a message and a hint (never a traceback) and an exit code: 0 success, 1 failed (the
demo did not heal, the holder cannot be reached), 2 usage error, 3 an input or output
path cannot be used, 4 the rules or configuration cannot be used, 5 another healer
holds the journal, 130 interrupted (docs/cli.md). ``healer replay`` is
:mod:`healer.cli_replay` over :mod:`healer.pipeline`; ``check``, ``kinds``,
``watch`` and ``demo`` are here.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from healer import __version__
from healer.cli_control import CONTROL_COMMANDS, add_control_commands
from healer.cli_journal import add_journal_command
from healer.errors import HealerError, InputError
from healer.tomlspot import LocatedError

# A command imports what it runs when it runs (the noqa'd imports below): a replay
# must not pay for the live stack's modules, about a fifth of a second at start-up.

__all__ = ["EXIT_CONFIG", "EXIT_INPUT", "EXIT_OK", "EXIT_USAGE", "main"]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_CONFIG = 4
EXIT_BUSY = 5  # another healer holds the journal
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse with a usage error in two lines: what is wrong, and where help is.

    The exit code stays argparse's 2; the full usage block is ``--help``'s job.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(
            EXIT_USAGE,
            f"{self.prog}: error: {message}\n  hint: `{self.prog} --help` lists the options,"
            " with examples\n",
        )


def _examples(*lines: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in lines)


def _positive(text: str) -> float:
    """A number of seconds above zero (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {text}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="healer",
        description="Watchdog for virtio-fs shares: typed events from VMM, virtiofsd, guest logs.",
        epilog=_examples(
            "healer demo                      # watch healer heal a throwaway share",
            "healer replay                    # replay the embedded example incident",
            "healer watch --config /etc/healer/healer.toml",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"healer {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    rp = commands.add_parser(
        "replay",
        help="turn captured logs into the typed event stream",
        description=(
            "Read captured logs (plain or gzip; - for standard input) and print their events. "
            "With no FILE, replay the embedded example: the user's real incident."
        ),
        epilog=_examples(
            "healer replay ch.log virtiofsd.log.gz --report incident.html",
            "journalctl -u virtiofsd -o short-iso | healer replay - --format jsonl",
            "healer replay --journal /var/lib/healer/journal --format counts",
            "healer replay ch.log --report diff.md --what-if ./my-rules",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rp.set_defaults(usage=rp)  # flag combinations are checked later, with this usage line
    rp.add_argument(
        "files",
        nargs="*",
        metavar="FILE",
        help="a log, plain or gzip; - reads standard input (default: the embedded example)",
    )
    rp.add_argument(
        "--format",
        choices=("table", "jsonl", "counts"),
        default="table",
        help="table: a timeline for people (default); jsonl: one JSON object per record, "
        'each with a "type"; counts: one JSON document of totals at the end',
    )
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
        metavar="N",
        help="cut longer lines to this many bytes (counted; at least 256; default 65536)",
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
    rp.add_argument(
        "--write-journal", metavar="DIR", help="record the replay in a journal (a new directory)"
    )
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
        help="also run these rules and report how their decisions differ (needs --report)",
    )
    check = commands.add_parser(
        "check",
        help="validate rules and explain what they do",
        description=(
            "Validate a rules directory or file, or a watchdog configuration and the rules "
            "it names; exit 4 on any problem."
        ),
        epilog=_examples(
            "healer check                     # the shipped rules",
            "healer check ./my-rules",
            "healer check /etc/healer/healer.toml",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument(
        "path",
        nargs="?",
        metavar="RULES_DIR|RULES_FILE|CONFIG",
        help="what to validate (default: the shipped rules)",
    )
    config_help = "the watchdog configuration (TOML; `healer check CONFIG` validates it)"
    watch = commands.add_parser(
        "watch",
        help="supervise virtiofsd and heal the configured shares (live)",
        description="Run the watchdog for the shares in CONFIG until SIGTERM or SIGINT.",
        epilog=_examples("healer watch --config /etc/healer/healer.toml"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    watch.add_argument("--config", required=True, metavar="CONFIG", help=config_help)
    hold = commands.add_parser(
        "hold",
        help="keep the shares' sockets and virtiofsd (the holder; systemd starts it)",
        description=(
            "Run the holder of CONFIG's shares in the foreground: it owns the listening "
            "sockets and is the parent of every virtiofsd, so they outlive `healer watch`. "
            "`healer watch` starts one itself when none runs."
        ),
        epilog=_examples("healer hold --config /etc/healer/healer.toml"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hold.add_argument("--config", required=True, metavar="CONFIG", help=config_help)
    stop = commands.add_parser(
        "stop",
        help="stop everything of CONFIG: healer, every virtiofsd, the sockets",
        description=(
            "Stop `healer watch` for CONFIG (SIGTERM), then have the holder stop every "
            "virtiofsd and remove the sockets. (SIGTERM to `healer watch` alone leaves the "
            "daemons serving for the next healer.)"
        ),
        epilog=_examples("healer stop --config /etc/healer/healer.toml"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    stop.add_argument("--config", required=True, metavar="CONFIG", help=config_help)
    demo = commands.add_parser(
        "demo",
        help="heal injected faults on a throwaway share, live (needs virtiofsd)",
        description=(
            "Start a temporary share under supervision with the cloud-hypervisor stand-in as "
            "VMM, kill virtiofsd, reboot the guest, cause a restart storm, and show the "
            "healing as it is journaled; exit 1 if a fault was not healed, 3 without virtiofsd. "
            "Its temporary directory is removed at the end unless --keep names one."
        ),
        epilog=_examples(
            "healer demo",
            "healer demo --keep /tmp/healer-demo   # keep the journal and report to read",
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--keep",
        metavar="DIR",
        help="put the demo's files (journal, report, logs) in DIR and keep them",
    )
    demo.add_argument(
        "--bound",
        type=_positive,
        default=30.0,
        metavar="SECONDS",
        help="wait at most this long for each fault to heal (default 30)",
    )
    add_control_commands(commands, config_help=config_help, examples=_examples)
    add_journal_command(commands, examples=_examples)
    commands.add_parser(
        "kinds",
        help="list the event kinds healer emits",
        description="List every event kind healer emits, with a one-line meaning.",
        epilog=_examples("healer kinds", "healer kinds | grep -i virtiofsd"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``healer`` console script and ``python -m healer``.

    Every error a user can cause ends here as a line saying what is wrong and a hint,
    with its exit code; nothing is printed to stdout before an input is found unusable.
    """
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except InputError as exc:
        _say(f"{exc.path}: {exc.problem}", exc.hint)
        return EXIT_INPUT
    except LocatedError as exc:
        from healer.config import ConfigError  # noqa: PLC0415 - loaded by whoever raised

        what = "configuration" if isinstance(exc, ConfigError) else "rules"
        print(f"healer: the {what} cannot be used:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except HealerError as exc:
        return _failed(exc, args)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        sys.stderr.close()  # the reader went away (| head); not an error
        return EXIT_OK
    except OSError as exc:  # a path the user named cannot be used as it must
        where = f"{exc.filename}: " if exc.filename else ""
        _say(
            f"{where}{exc.strerror or exc}",
            "check that the path exists and healer may read or write it",
        )
        return EXIT_INPUT


def _run(args: argparse.Namespace) -> int:
    if args.command == "kinds":
        from healer.events import KINDS  # noqa: PLC0415 - see the top

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
    if args.command in CONTROL_COMMANDS:
        from healer.cli_control import run_control  # noqa: PLC0415 - see the top

        return run_control(args)
    if args.command == "journal":
        from healer.cli_journal import run_journal  # noqa: PLC0415 - see the top

        return run_journal(args)
    if args.command == "demo":
        from healer.demo import run_demo  # noqa: PLC0415 - the live parts only here

        return run_demo(keep=Path(args.keep) if args.keep else None, bound_s=args.bound)
    from healer.cli_replay import run_replay  # noqa: PLC0415 - see the top

    return run_replay(args.usage, args)


def _failed(exc: HealerError, args: argparse.Namespace) -> int:
    """A journal that cannot be used, or a holder that cannot be reached, and the like."""
    from healer.journal import JournalBusy, JournalCorrupt  # noqa: PLC0415 - see the top

    if isinstance(exc, JournalCorrupt):
        print(f"healer: {exc}", file=sys.stderr)  # file, line and fix
        return EXIT_INPUT
    if isinstance(exc, JournalBusy):
        print(f"healer: {exc}", file=sys.stderr)  # who holds it, and the fix
        return EXIT_BUSY
    _say(str(exc), _check_hint(args))
    return EXIT_FAILED


def _say(problem: str, hint: str) -> None:
    """An error as a user reads it: one line of what is wrong, one of what to do."""
    print(f"healer: {problem}\n  hint: {hint}", file=sys.stderr)


def _check_hint(args: argparse.Namespace) -> str:
    config = getattr(args, "config", None)
    if config:
        return f"`healer check {config}` validates the configuration; the journal and logs say more"
    return f"`healer {args.command} --help` says what it needs"


def _check(path: str | None) -> int:
    """Validate a configuration or rules; print what they do, or every problem located."""
    from healer.config import check_host, is_loopback, load_config  # noqa: PLC0415
    from healer.engine.rules import describe  # noqa: PLC0415 - see the top
    from healer.engine.ruletext import rule_warnings  # noqa: PLC0415
    from healer.rulefiles import default_rules_dir, load_rules  # noqa: PLC0415
    from healer.supervise.process import hidden_readiness  # noqa: PLC0415

    root = Path(path) if path else default_rules_dir()
    if root.is_file() and _is_config(root):
        config = load_config(root)  # ConfigError is reported by main()
        host = check_host(config)  # virtiofsd and shared_dir on this host: errors raise
        print(f"{root}: {len(config.shares)} shares, journal {config.journal}")
        for share in config.shares:
            print(f"  share {share.name}: tag {share.tag}, socket {share.socket}, {share.mode}")
            for problem in hidden_readiness(share.virtiofsd):
                print(f"  warning: share {share.name}: virtiofsd {problem}")
        for warning in host:
            print(f"  warning: {warning}")
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
    for warning in rule_warnings(rules):
        print(f"  warning: {warning}")
    policy = rules.policy
    print(
        f"  policy: respawn backoff {policy.backoff_initial_s:g} s doubling to "
        f"{policy.backoff_max_s:g} s (+{policy.backoff_jitter:.0%} jitter), reset after "
        f"{policy.healthy_after_s:g} s healthy; circuit retry every {policy.circuit_retry_s:g} s"
    )
    return EXIT_OK


def _is_config(path: Path) -> bool:
    """A watchdog configuration names shares; a rules file names rules."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False  # not readable: load_rules names the file and the problem
    return re.search(r"^\s*\[\[share\]\]|^\s*\[healer\]", text, re.M) is not None
