"""Rule validation: the shipped rules pass; every mistake is located and explained."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from healer.cli import EXIT_CONFIG, EXIT_OK
from healer.engine.rules import RulesError
from healer.rulefiles import load_rules

ROOT = Path(__file__).resolve().parent.parent

GOOD = """[[rule]]
id = "ok"
on = ["VirtiofsdExited"]
actions = ["respawn_virtiofsd"]
"""


def healer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "healer", *args], capture_output=True, text=True, check=False
    )


def test_shipped_rules_pass_check() -> None:
    result = healer("check", str(ROOT / "rules"))
    assert result.returncode == EXIT_OK, result.stderr
    assert "respawn-on-exit: on BackendDisconnected" in result.stdout
    assert (
        "restart-storm: on VirtiofsdExited | VirtiofsdStartFailed: 5 events within 60 s"
        in result.stdout
    )
    assert healer("check").returncode == EXIT_OK  # default: the shipped rules


@pytest.mark.parametrize(
    ("text", "line", "message", "fix"),
    [
        (GOOD + 'colour = "red"\n', 5, "unknown key 'colour'", "docs/rules.md"),
        (
            GOOD.replace("VirtiofsdExited", "VirtiofsdExit"),
            3,
            "unknown event kind 'VirtiofsdExit'",
            "did you mean 'VirtiofsdExited'?",
        ),
        (
            GOOD.replace("respawn_virtiofsd", "respawn"),
            4,
            "unknown action 'respawn'",
            "did you mean 'respawn_virtiofsd'?",
        ),
        (
            GOOD + '[rule.where]\nmessage = "([unclosed"\n',
            6,
            "bad regular expression",
            "fix the pattern",
        ),
        (
            GOOD + 'correlate = "threshold"\ncount = 3\nwindow = 0\n',
            7,
            "window 0 is impossible for threshold",
            "seconds in (0,",
        ),
        (
            GOOD + 'correlate = "threshold"\ncount = 1\nwindow = 10\n',
            6,
            "a threshold needs at least 2 events",
            "count = 2 or more",
        ),
        (GOOD + "window = 5\n", 5, "a single rule has no window", "drop it"),
        (
            GOOD + 'correlate = "cooldown"\nwindow = -3\n',
            6,
            "window -3 is impossible",
            "seconds in",
        ),
        (
            GOOD + '[rule.where]\ntag = ["x"]\n',
            6,
            "field 'tag' does not exist on VirtiofsdExited",
            "every kind",
        ),
        (
            GOOD + 'correlate = "pair"\nwindow = 5\nthen = ["VirtiofsdExited"]\n',
            7,
            "a kind is both 'on' and 'then'",
            "two different kinds",
        ),
        (GOOD + 'correlate = "sometimes"\n', 5, "unknown correlation 'sometimes'", "docs/rules.md"),
        (GOOD.replace('id = "ok"', 'id = "Not OK"'), 2, "bad or missing id 'Not OK'", "lower-case"),
        (
            GOOD + "[policy]\nbackoff_maximum = 3\n",
            6,
            "unknown policy key 'backoff_maximum'",
            "did you mean 'backoff_max'?",
        ),
        (
            GOOD + "[policy]\nbackoff_jitter = 2.0\n",
            6,
            "backoff_jitter = 2.0 is out of range",
            "at most 1",
        ),
        (
            GOOD + "[policy]\nbackoff_initial = 9.0\nbackoff_max = 3.0\n",
            7,
            "backoff_max is below backoff_initial",
            "raise backoff_max",
        ),
        ('[[rule]]\nid = "x"\non = ["VirtiofsdExited"\n', 3, "not valid TOML", "fix the syntax"),
        (
            GOOD.replace('actions = ["respawn_virtiofsd"]', "actions = []"),
            4,
            "the rule asks for no action",
            "list actions",
        ),
    ],
)
def test_broken_rules_get_a_located_error(
    tmp_path: Path, text: str, line: int, message: str, fix: str
) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(RulesError) as caught:
        load_rules(tmp_path)
    (problem,) = caught.value.problems
    assert (problem.file, problem.line) == (str(path), line)
    assert message in problem.message
    assert fix in problem.fix


def test_duplicate_ids_across_files_name_both_places(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(GOOD)
    (tmp_path / "b.toml").write_text("\n" + GOOD)
    with pytest.raises(RulesError) as caught:
        load_rules(tmp_path)
    (problem,) = caught.value.problems
    assert problem.line == 2
    assert f"already used at {tmp_path / 'a.toml'}:1" in problem.message


def test_a_bad_file_stops_check_and_replay_with_every_problem(tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text(GOOD.replace("VirtiofsdExited", "Nope") + "bogus = 1\n")
    result = healer("check", str(tmp_path))
    assert result.returncode == EXIT_CONFIG
    assert f"{tmp_path / 'r.toml'}:3: unknown event kind 'Nope'" in result.stderr
    assert f"{tmp_path / 'r.toml'}:5: unknown key 'bogus'" in result.stderr
    replayed = healer("replay", "--rules", str(tmp_path))
    assert replayed.returncode == EXIT_CONFIG
    assert replayed.stdout == ""  # nothing half-configured ran


def test_disabled_rules_are_not_loaded(tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text(GOOD + "enabled = false\n")
    assert load_rules(tmp_path).rules == ()


def test_check_warns_when_a_virtiofsd_argv_hides_the_lines_healer_reads(tmp_path: Path) -> None:
    """--syslog and quiet log levels hide the readiness lines: a warning, not a failure."""
    shares = {
        "quiet": '["/usr/libexec/virtiofsd", "--fd", "{fd}", "--shared-dir", "{shared_dir}", "--log-level", "warn"]',
        "syslog": '["/usr/libexec/virtiofsd", "--fd={fd}", "--shared-dir={shared_dir}", "--syslog"]',
        "c-err": '["/usr/lib/qemu/virtiofsd", "--fd={fd}", "-o", "source={shared_dir},log_level=err"]',
        "fine": '["/usr/lib/qemu/virtiofsd", "--fd={fd}", "-o", "source={shared_dir}", "-d"]',
    }
    # A stand-in at each path: that the daemon exists is checked (test_check_types.py)
    for path in ("/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"):
        stub = tmp_path / path.lstrip("/")
        stub.parent.mkdir(parents=True, exist_ok=True)
        stub.write_text("#!/bin/sh\n")
        stub.chmod(0o755)
        shares = {name: argv.replace(path, str(stub)) for name, argv in shares.items()}
    text = f'[healer]\njournal = "{tmp_path / "journal"}"\n'
    for name, argv in shares.items():
        text += (
            f'\n[[share]]\nname = "{name}"\nsocket = "{tmp_path / name}.sock"\n'
            f'shared_dir = "{tmp_path}"\nvirtiofsd = {argv}\n'
        )
    (tmp_path / "healer.toml").write_text(text)
    result = healer("check", str(tmp_path / "healer.toml"))
    assert result.returncode == EXIT_OK, result.stderr
    warnings = [line for line in result.stdout.splitlines() if "warning:" in line]
    assert warnings == [
        "  warning: share quiet: virtiofsd --log-level warn hides the readiness lines: "
        "use --log-level info",
        "  warning: share syslog: virtiofsd --syslog sends the readiness lines away from "
        "stderr: leave it out (share.log keeps a copy of stderr)",
        "  warning: share c-err: virtiofsd -o log_level=err hides the readiness lines: "
        "use log_level=info",
    ]
