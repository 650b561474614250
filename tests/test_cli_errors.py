"""Every user error of every ``healer`` subcommand: an exit code and a line, never a traceback.

Each case runs ``python -m healer`` as a user would (a real process, real paths) and
checks the documented exit code (README, docs/cli.md: 2 usage, 3 an input or output
path cannot be used, 4 rules or configuration cannot be used), a short stderr that
says what is wrong and what to do, and nothing on stdout. The subcommands come from
the parser itself: a new one fails :func:`test_every_subcommand_has_error_cases`
until its cases are written here.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CORPUS

from healer.cli import _parser

LOG = str(CORPUS / "virtiofsd-rust-real.log")
DOCS = Path(__file__).parent.parent / "docs" / "cli.md"
USAGE, INPUT, CONFIG = 2, 3, 4  # the README's exit codes, written out


@dataclass(frozen=True)
class Case:
    """``argv`` built in a scratch directory; the exit code and words stderr must hold."""

    name: str
    argv: Callable[[Path], list[str]]
    code: int
    says: str


def _file(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _config(d: Path, journal: str) -> str:
    text = (
        f'[healer]\njournal = "{journal}"\nmetrics = "off"\n\n'
        f'[[share]]\nname = "fs0"\nsocket = "{d}/fs0.sock"\nshared_dir = "{d}"\n'
    )
    return _file(d / "healer.toml", text.encode())


def _journal(d: Path) -> str:
    """A journal directory with one (empty) segment."""
    (d / "j").mkdir()
    _file(d / "j" / "segment-000000000001.jsonl", b"")
    return str(d / "j")


BINARY_CONFIG = b"\xff\xfe[healer]\n"
BROKEN_TOML = b"[healer\njournal = 1\n"

CASES: dict[str, list[Case]] = {
    "replay": [
        Case("missing file", lambda d: ["replay", str(d / "missing.log")], INPUT, "no such file"),
        Case("directory as file", lambda d: ["replay", str(d)], INPUT, "is a directory"),
        Case("stdin twice", lambda d: ["replay", "-", "-"], INPUT, "more than once"),
        Case(
            "report in a missing directory",
            lambda d: ["replay", LOG, "--report", "/nonexistent/dir/x.md"],
            INPUT,
            "directory does not exist",
        ),
        Case(
            "report is a directory",
            lambda d: ["replay", LOG, "--report", str(d)],
            INPUT,
            "is a directory",
        ),
        Case(
            "report under /proc",
            lambda d: ["replay", LOG, "--report", "/proc/x.md"],
            INPUT,
            "cannot be written",
        ),
        Case(
            "report under a file",
            lambda d: ["replay", LOG, "--report", _file(d / "f", b"") + "/x.md"],
            INPUT,
            "is not a directory",
        ),
        Case(
            "metrics under /proc",
            lambda d: ["replay", LOG, "--metrics", "/proc/foo"],
            INPUT,
            "cannot be written",
        ),
        Case(
            "metrics is a directory",
            lambda d: ["replay", LOG, "--metrics", str(d)],
            INPUT,
            "is a directory",
        ),
        Case(
            "journal written under /proc",
            lambda d: ["replay", LOG, "--write-journal", "/proc/foo"],
            INPUT,
            "cannot be created",
        ),
        Case(
            "journal written to a file",
            lambda d: ["replay", LOG, "--write-journal", _file(d / "f", b"x")],
            INPUT,
            "is not a directory",
        ),
        Case("missing journal", lambda d: ["replay", "--journal", str(d / "j")], INPUT, "journal"),
        Case(
            "journal without segments",
            lambda d: ["replay", "--journal", str(d)],
            INPUT,
            "no journal segments",
        ),
        Case(
            "journal that cannot be read",
            lambda d: ["replay", "--journal", "/proc/self/mem"],
            INPUT,
            "error",
        ),
        Case(
            "missing rules",
            lambda d: ["replay", LOG, "--rules", str(d / "nope")],
            CONFIG,
            "no such file",
        ),
        Case(
            "rules that are not TOML",
            lambda d: ["replay", LOG, "--rules", _file(d / "r.toml", BROKEN_TOML)],
            CONFIG,
            "not valid TOML",
        ),
        Case(
            "missing what-if rules",
            lambda d: ["replay", LOG, "--report", str(d / "r.md"), "--what-if", str(d / "no")],
            CONFIG,
            "no such file",
        ),
        Case(
            "what-if without report",
            lambda d: ["replay", LOG, "--what-if", str(d)],
            USAGE,
            "--what-if needs --report",
        ),
        Case(
            "no-rules with report",
            lambda d: ["replay", LOG, "--no-rules", "--report", str(d / "r.md")],
            USAGE,
            "--no-rules",
        ),
        Case(
            "rules and no-rules",
            lambda d: ["replay", LOG, "--no-rules", "--rules", str(d)],
            USAGE,
            "not allowed with",
        ),
        Case(
            "journal and files",
            lambda d: ["replay", LOG, "--journal", str(d)],
            USAGE,
            "one or the other",
        ),
        Case(
            "journal rewritten without rules",
            lambda d: ["replay", "--journal", str(d), "--write-journal", str(d / "j2")],
            USAGE,
            "needs --rules",
        ),
        Case("unknown format", lambda d: ["replay", LOG, "--format", "xml"], USAGE, "invalid"),
        Case("year not a number", lambda d: ["replay", LOG, "--year", "abc"], USAGE, "--year"),
        Case(
            "tiny line limit",
            lambda d: ["replay", LOG, "--max-line-bytes", "10"],
            USAGE,
            "at least 256",
        ),
        Case("unknown option", lambda d: ["replay", "--colour"], USAGE, "unrecognized"),
    ],
    "check": [
        Case("missing path", lambda d: ["check", str(d / "nope")], CONFIG, "no such file"),
        Case("directory without rules", lambda d: ["check", str(d)], CONFIG, "no *.toml"),
        Case("unreadable file", lambda d: ["check", "/proc/self/mem"], CONFIG, "cannot be read"),
        Case(
            "broken TOML",
            lambda d: ["check", _file(d / "r.toml", BROKEN_TOML)],
            CONFIG,
            "not valid TOML",
        ),
        Case(
            "binary configuration",
            lambda d: ["check", _file(d / "c.toml", BINARY_CONFIG)],
            CONFIG,
            "not",
        ),
        Case("two paths", lambda d: ["check", str(d), str(d)], USAGE, "unrecognized"),
    ],
    "watch": [
        Case("no config", lambda d: ["watch"], USAGE, "--config"),
        Case("missing config", lambda d: ["watch", "--config", str(d / "no.toml")], CONFIG, "read"),
        Case("config is a directory", lambda d: ["watch", "--config", str(d)], CONFIG, "read"),
        Case(
            "binary config",
            lambda d: ["watch", "--config", _file(d / "c.toml", BINARY_CONFIG)],
            CONFIG,
            "not UTF-8",
        ),
        Case(
            "broken config",
            lambda d: ["watch", "--config", _file(d / "c.toml", BROKEN_TOML)],
            CONFIG,
            "not valid TOML",
        ),
        Case(
            "journal under /proc",
            lambda d: ["watch", "--config", _config(d, "/proc/foo/journal")],
            INPUT,
            "/proc/foo",
        ),
    ],
    "hold": [
        Case("no config", lambda d: ["hold"], USAGE, "--config"),
        Case("missing config", lambda d: ["hold", "--config", str(d / "no.toml")], CONFIG, "read"),
        Case(
            "binary config",
            lambda d: ["hold", "--config", _file(d / "c.toml", BINARY_CONFIG)],
            CONFIG,
            "not UTF-8",
        ),
        Case(
            "broken config",
            lambda d: ["hold", "--config", _file(d / "c.toml", BROKEN_TOML)],
            CONFIG,
            "not valid TOML",
        ),
    ],
    "stop": [
        Case("no config", lambda d: ["stop"], USAGE, "--config"),
        Case("missing config", lambda d: ["stop", "--config", str(d / "no.toml")], CONFIG, "read"),
        Case(
            "broken config",
            lambda d: ["stop", "--config", _file(d / "c.toml", BROKEN_TOML)],
            CONFIG,
            "not valid TOML",
        ),
    ],
    "demo": [
        Case("keep under /proc", lambda d: ["demo", "--keep", "/proc/foo"], INPUT, "cannot be"),
        Case(
            "keep is a file",
            lambda d: ["demo", "--keep", _file(d / "f", b"x")],
            INPUT,
            "is not a directory",
        ),
        Case("negative bound", lambda d: ["demo", "--bound", "-1"], USAGE, "positive"),
        Case("bound not a number", lambda d: ["demo", "--bound", "soon"], USAGE, "not a number"),
    ],
    "kinds": [
        Case("an argument", lambda d: ["kinds", "extra"], USAGE, "unrecognized"),
    ],
    "status": [
        Case("no config", lambda d: ["status"], USAGE, "--config"),
        Case(
            "missing config", lambda d: ["status", "--config", str(d / "no.toml")], CONFIG, "read"
        ),
        Case(
            "no healer and no journal",
            lambda d: ["status", "--config", _config(d, f"{d}/journal")],
            INPUT,
            "no healer runs",
        ),
    ],
    "journal": [
        Case("no journal named", lambda d: ["journal"], USAGE, "--config --journal"),
        Case(
            "missing config", lambda d: ["journal", "--config", str(d / "no.toml")], CONFIG, "read"
        ),
        Case(
            "missing journal",
            lambda d: ["journal", "--journal", str(d / "none")],
            INPUT,
            "no such journal",
        ),
        Case(
            "no segments", lambda d: ["journal", "--journal", str(d)], INPUT, "no journal segments"
        ),
        Case(
            "since not a time",
            lambda d: ["journal", "--journal", _journal(d), "--since", "teatime"],
            INPUT,
            "--since 'teatime' is not a time",
        ),
        Case("lines not a number", lambda d: ["journal", "--lines", "x"], USAGE, "invalid int"),
    ],
}


def _operator_cases(command: str) -> list[Case]:
    """The operator's commands: SHARE and --config, and a running healer to answer."""
    return [
        Case("no share", lambda d: [command, "--config", str(d / "no.toml")], USAGE, "SHARE"),
        Case(
            "missing config",
            lambda d: [command, "fs0", "--config", str(d / "no.toml")],
            CONFIG,
            "read",
        ),
        Case(
            "no healer runs",
            lambda d: [command, "fs0", "--config", _config(d, f"{d}/journal")],
            INPUT,
            "needs a running",
        ),
    ]


CASES.update(
    {command: _operator_cases(command) for command in ("pause", "resume", "reset", "restart")}
)
TOP = [
    Case("no command", lambda d: [], USAGE, "required"),
    Case("unknown command", lambda d: ["heal"], USAGE, "invalid choice"),
]


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def all_cases() -> Iterator[tuple[str | None, Case]]:
    for command, cases in CASES.items():
        for case in cases:
            yield command, case
    for case in TOP:
        yield None, case


def test_every_subcommand_has_error_cases() -> None:
    """A subcommand the parser has and this file does not is a failure; cases for one
    it does not have (yet) are skipped below."""
    assert [name for name in subcommands(_parser()) if not CASES.get(name)] == []


@pytest.mark.parametrize(
    ("command", "case"), list(all_cases()), ids=[f"{c} {k.name}" for c, k in all_cases()]
)
def test_a_user_error_is_an_exit_code_and_a_line(
    command: str | None, case: Case, tmp_path: Path
) -> None:
    if command is not None and command not in subcommands(_parser()):
        pytest.skip(f"healer has no {command} subcommand")
    argv = case.argv(tmp_path)
    try:
        run = subprocess.run(
            [sys.executable, "-m", "healer", *argv],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
    finally:
        config = tmp_path / "healer.toml"
        if config.exists():  # whatever a live command started on it, stopped
            subprocess.run(
                [sys.executable, "-m", "healer", "stop", "--config", str(config)],
                capture_output=True,
                timeout=60,
                check=False,
            )
    err = run.stderr.decode()
    assert run.returncode == case.code, err
    assert "Traceback" not in err
    assert run.stdout == b"", "nothing is printed before the error is found"
    lines = err.splitlines()
    assert 1 <= len(lines) <= 3, err
    assert lines[0].startswith("healer"), err
    assert "hint:" in err or "(fix:" in err, err
    assert case.says in err, err


def test_usage_errors_are_two_lines_pointing_at_help() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "healer", "replay", "--what-if", "rules"],
        capture_output=True,
        check=False,
    )
    assert run.returncode == USAGE
    assert run.stderr.decode().splitlines() == [
        "healer replay: error: --what-if needs --report FILE (the comparison is part of the report)",
        "  hint: `healer replay --help` lists the options, with examples",
    ]


def test_every_option_of_every_subcommand_has_help() -> None:
    for name, sub in subcommands(_parser()).items():
        for action in sub._actions:
            assert action.help, f"healer {name} {action.option_strings or action.dest}: no help"
            assert action.help != argparse.SUPPRESS


def test_every_subcommand_shows_examples_that_parse() -> None:
    parser = _parser()
    for name, sub in subcommands(parser).items():
        epilog = sub.epilog or ""
        assert epilog.startswith("examples:"), f"healer {name} has no examples"
        examples = [line.split("#")[0].strip() for line in epilog.splitlines()[1:]]
        assert examples
        for example in examples:
            argv = shlex.split(example.split("healer ", 1)[1].split("|")[0])
            assert argv[0] == name, example
            parser.parse_args(argv)  # SystemExit (a failure) if the example is wrong


def test_help_shows_the_examples() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "healer", "demo", "--help"], capture_output=True, check=True
    )
    assert b"healer demo --keep /tmp/healer-demo" in run.stdout
    assert b"--bound SECONDS" in run.stdout


def test_the_error_transcript_in_docs_cli_is_what_a_user_sees() -> None:
    """docs/cli.md's ``$ healer ...`` lines, run (``ch.log`` a real log): the lines that
    follow each are its stderr, ``$ echo $?`` its exit code."""
    text = DOCS.read_text(encoding="utf-8")
    block = text.split("## Errors", 1)[1].split("```", 2)[1]
    runs = [chunk.splitlines() for chunk in block.split("$ ")[1:]]
    commands = [r for r in runs if r[0].startswith("healer ")]
    codes = [int(r[1]) for r in runs if r[0] == "echo $?"]
    assert len(commands) == len(codes) == 2
    for (command, *said), code in zip(commands, codes, strict=True):
        argv = shlex.split(command.removeprefix("healer ").replace("ch.log", LOG))
        run = subprocess.run(
            [sys.executable, "-m", "healer", *argv], capture_output=True, check=False
        )
        assert run.stderr.decode().splitlines() == said
        assert run.returncode == code
        assert run.stdout == b""
