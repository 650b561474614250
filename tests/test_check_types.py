"""`healer check` knows the types: of rule keys and the policy, and of the event fields
a ``[rule.where]`` matches (and the values they can hold); a restart_vm rule the
policy forbids is a warning. The host's virtiofsd and shared_dir: test_config.py."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import EXCERPTS, parse, parse_excerpt

from healer.cli import EXIT_CONFIG, EXIT_OK
from healer.engine.rules import RulesError, RuleSet
from healer.engine.ruletable import KNOWN_VALUES
from healer.engine.ruletext import compile_rules, rule_warnings
from healer.events import Event

GOOD = """[[rule]]
id = "ok"
on = ["VirtiofsdExited"]
actions = ["respawn_virtiofsd"]
"""


def healer(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "healer", *args], capture_output=True, text=True, check=False
    )


def problem_of(text: str) -> tuple[int, str, str]:
    """The one problem of a rules text: its line, message and fix."""
    with pytest.raises(RulesError) as caught:
        compile_rules([("r.toml", text)])
    (problem,) = caught.value.problems
    return problem.line, problem.message, problem.fix


def compiled(text: str) -> RuleSet:
    return compile_rules([("r.toml", text)])


# --- a type error is a type error ---------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "line", "message", "fix"),
    [
        (
            'correlate = "threshold"\ncount = "5"\nwindow = 10\n',
            6,
            'count must be an integer, not a string ("5")',
            "write count = 5, without the quotes",
        ),
        ('correlate = "threshold"\ncount = 2.5\nwindow = 10\n', 6, "not a float (2.5)", "e.g."),
        (
            'correlate = "cooldown"\nwindow = "60"\n',
            6,
            'window must be a number of seconds, not a string ("60")',
            "write window = 60, without the quotes",
        ),
        (
            'enabled = "false"\n',
            5,
            'enabled must be true or false, not a string ("false")',
            "write enabled = false, without the quotes",
        ),
        ("severity = 2\n", 5, "severity must be a string, not an integer (2)", "warning"),
        ("description = 5\n", 5, "description must be a string", "e.g."),
        ('correlate = ["pair"]\n', 5, "correlate must be a string, not a list", "e.g."),
        (
            '[policy]\nseed = "7"\n',
            6,
            'seed must be an integer, not a string ("7")',
            "write seed = 7, without the quotes",
        ),
        (
            '[policy]\nallow_restart_vm = "yes"\n',
            6,
            'allow_restart_vm must be true or false, not a string ("yes")',
            "e.g. allow_restart_vm = false",
        ),
        (
            '[policy]\nbackoff_max = "60"\n',
            6,
            "backoff_max must be a number of seconds, not a string",
            "write backoff_max = 60, without the quotes",
        ),
        ("[policy]\nstale_limit = 2.5\n", 6, "stale_limit must be an integer, not a float", "10"),
        (
            "[policy]\nrecovery_kinds = 3\n",
            6,
            "recovery_kinds must be a list of event kinds, not an integer",
            '["VirtiofsdClientConnected", "DeviceAdded"]',
        ),
    ],
)
def test_a_type_error_is_reported_as_one(extra: str, line: int, message: str, fix: str) -> None:
    found = problem_of(GOOD + extra)
    assert found[0] == line
    assert message in found[1]
    assert fix in found[2]


def test_check_says_count_is_a_string_not_that_it_needs_two_events(tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text(GOOD + 'correlate = "threshold"\ncount = "5"\nwindow = 60\n')
    result = healer("check", str(tmp_path))
    assert result.returncode == EXIT_CONFIG
    assert result.stderr == (
        "healer: the rules cannot be used:\n"
        f'  {tmp_path / "r.toml"}:6: count must be an integer, not a string ("5") '
        "(fix: write count = 5, without the quotes)\n"
    )


# --- a predicate value is checked against the field's type and values ---------------


@pytest.mark.parametrize(
    ("on", "where", "message", "fix"),
    [
        (
            "VirtiofsdExited",
            "signal = 9",
            "signal = 9 never matches: signal holds a string on VirtiofsdExited, not an "
            "integer: one of 'SIGHUP', 'SIGINT'",
            'signal = "SIGKILL"',
        ),
        ("VirtiofsdExited", 'signal = "KILL"', "signal 'KILL' never occurs", "'SIGKILL'"),
        ("VirtiofsdExited", 'status = "1"', "status holds an integer", "status = 1, without"),
        ("VirtiofsdExited", "status = true", "not a boolean", "e.g. status = 1"),
        (
            "VirtiofsdExited",
            'expected = "false"',
            "expected holds true or false",
            "expected = false, without the quotes",
        ),
        ("VirtiofsdExited", 'reporter = "supervisor"', "never occurs", "'supervisord'"),
        ("VirtiofsdExited", 'level = "WARNING"', "level is one of 'ERROR', 'WARN'", "'WARN'"),
        ("VirtiofsdExited", "share = 5", "share holds a string", 'share = "5"'),
        ("VirtiofsdExited", 'program = "virtiofsd"', "not a field of events", "message"),
        ("VirtiofsdExited", 'time = "x"', "field 'time' of VirtiofsdExited cannot be", "match"),
        ("VirtiofsdExited", "status = 1.5", "status holds an integer", "e.g."),
        (
            "AddFsFailed",
            'error_kind = ["ConnectionRefused", "ConnRefused"]',
            "error_kind 'ConnRefused' never occurs: error_kind is one of 'NotFound'",
            "did you mean 'ConnectionRefused'?",
        ),
        ("AddFsFailed", 'errno = [111, "ECONNREFUSED"]', "errno holds an integer", "e.g."),
        (
            "VirtiofsdListening",
            'implementation = "C"',
            "one of 'rust', 'c'",
            "did you mean 'c'?",
        ),
        ("GuestReboot", 'action = "reboot"', "one of 'restart', 'power-off'", "restart"),
        ("VmmLifecycle", 'properties = "x"', "cannot be matched (it holds a table)", "match"),
    ],
)
def test_a_where_value_that_cannot_occur_is_located_with_the_values_that_can(
    on: str, where: str, message: str, fix: str
) -> None:
    text = f'[[rule]]\nid = "x"\non = ["{on}"]\nactions = ["notify"]\n[rule.where]\n{where}\n'
    line, found, how = problem_of(text)
    assert line == 6
    assert message in found
    assert fix in how


@pytest.mark.parametrize(
    ("on", "where"),
    [
        ("VirtiofsdExited", 'signal = ["SIGKILL", "SIGTERM", "SIGRTMIN+3"]'),
        ("VirtiofsdExited", "status = [1, 101]\nexpected = false"),
        ("VirtiofsdExited", 'reporter = "healer"\nlevel = ["WARN", "ERROR"]\nshare = "fs0"'),
        ('VirtiofsdExited", "ApiError', 'status = [1, "500"]'),  # an int there, a string here
        ("VirtiofsdChildTerminated", 'signal = "SIGKILL"\nsigno = 9'),
        ("AddFsFailed", 'chain = "SocketConnect"\nerror_kind = "NotFound"\nerrno = 2'),
    ],
)
def test_values_that_can_occur_pass(on: str, where: str) -> None:
    text = f'[[rule]]\nid = "x"\non = ["{on}"]\nactions = ["notify"]\n[rule.where]\n{where}\n'
    assert len(compiled(text).rules) == 1


def test_the_value_check_suggests_matches_the_events_the_parsers_make() -> None:
    """signal = 9 was accepted and matched nothing; the fix it names matches each death."""
    deaths = parse(
        b"2024-05-01 10:00:00,000 INFO exited: virtiofsd (terminated by SIGKILL)\n"
        b"May 01 10:00:01 host systemd[1]: virtiofsd.service: Main process exited, "
        b"code=killed, status=9/KILL\n"
    )
    assert [type(e).__name__ for e in deaths] == ["VirtiofsdExited", "VirtiofsdExited"]
    *_, fix = problem_of(GOOD + "[rule.where]\nsignal = 9\n")
    assert fix.startswith('signal = "SIGKILL"')
    (rule,) = compiled(GOOD + f"[rule.where]\n{fix.split(' (')[0]}\n").rules
    assert all(rule.matches(e) for e in deaths)


def test_the_known_values_are_what_the_parsers_produce() -> None:
    """Every known-valued field of every event of the corpus (and of healer's own
    observations) holds a value ``KNOWN_VALUES`` lists: the list is not stale."""
    events: list[Event] = [e for excerpt in EXCERPTS for e in parse_excerpt(excerpt)]
    events += parse(
        b"May 01 10:00:01 host systemd[1]: virtiofsd.service: Main process exited, "
        b"code=killed, status=6/ABRT\n"
        b"[2024-05-01T10:00:02Z INFO  virtiofsd] Child process terminated by signal 9\n"
    )
    seen: dict[str, set[str]] = {key: set() for key in KNOWN_VALUES}
    for event in events:
        for f in dataclasses.fields(event):
            value = getattr(event, f.name)
            if f.name in KNOWN_VALUES and isinstance(value, str):
                assert value in KNOWN_VALUES[f.name], (type(event).__name__, f.name, value)
                seen[f.name].add(value)
    assert {key for key, values in seen.items() if values} >= {
        "level",
        "signal",
        "error_kind",
        "implementation",
        "reporter",
    }
    assert {"SIGKILL", "SIGABRT"} <= seen["signal"]


RESTART_VM = """[[rule]]
id = "restart-vm"
on = ["VmmExited"]
actions = ["restart_vm"]
"""


def test_a_restart_vm_rule_the_policy_forbids_is_a_warning(tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text(GOOD + "\n" + RESTART_VM)
    result = healer("check", str(tmp_path))
    assert result.returncode == EXIT_OK, result.stderr
    assert (
        f"  warning: {tmp_path / 'r.toml'}:6: rule 'restart-vm' asks for restart_vm, which "
        "the policy does not allow: it will always be suppressed (fix: set allow_restart_vm "
        "= true in [policy], or set enabled = false)\n"
    ) in result.stdout
    allowed = GOOD + "\n" + RESTART_VM + "\n[policy]\nallow_restart_vm = true\n"
    assert rule_warnings(compiled(allowed)) == []
    assert rule_warnings(compiled(GOOD + "\n" + RESTART_VM + "enabled = false\n")) == []
    pair = GOOD.replace('actions = ["respawn_virtiofsd"]', 'actions = ["notify"]') + (
        'correlate = "pair"\nwindow = 5\nthen = ["VmReset"]\nthen_actions = ["restart_vm"]\n'
    )
    assert [w.line for w in rule_warnings(compiled(pair))] == [1]


def test_a_where_under_an_unknown_kind_is_told_once_not_raised() -> None:
    """Found by the fuzz job: a typed [rule.where] under an 'on' of no known kind
    raised IndexError (a traceback from `healer check`); the 'on' is the problem."""
    text = '[[rule]]\nid = "r"\non = ["Bogus"]\nactions = ["respawn_virtiofsd"]\n'
    assert problem_of(text + "[rule.where]\nreason = 5\n")[:2] == (
        3,
        "unknown event kind 'Bogus'",
    )
    # and a table where a value belongs (TypeError: unhashable, found the same way)
    with pytest.raises(RulesError) as caught:
        compile_rules([("r.toml", text + '[rule.where]\nreason = { s = ["x"] }\n')])
    assert [p.message for p in caught.value.problems] == [
        "unknown event kind 'Bogus'",
        "reason must be a value or a list of values",
    ]
