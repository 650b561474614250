"""The notify action's hook: ``[alert] command`` run with the alert as JSON on its
standard input (never in its argv), a fixed small environment, bounded in time.
A real hook program (a Python script) records what it got."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

from healer.actions.alert import ALERT_ENV, alert_document, send_alert
from healer.config import AlertConfig, ConfigError, load_config
from healer.engine.model import Action, Cause, Decision, Status

T = 1796378400.0  # 2026-12-04T10:00:00Z
DECISION = Decision(
    "fs0#3/notify/1",
    T + 5,
    T + 5,
    "fs0",
    "fs0#3",
    Action.NOTIFY,
    "restart-storm",
    Cause("VirtiofsdExited", "healer:fs0", 7, 70, T),
)
HOOK = """import json, os, sys
data = sys.stdin.read()
with open(sys.argv[1], "w") as out:
    json.dump({"stdin": data, "argv": sys.argv, "env": dict(os.environ)}, out)
"""


def hook(tmp_path: Path, body: str = HOOK) -> tuple[AlertConfig, Path]:
    script, record = tmp_path / "hook.py", tmp_path / "got.json"
    script.write_text(body)
    return AlertConfig((sys.executable, str(script), str(record)), timeout=20.0), record


def test_the_document_says_what_why_and_who() -> None:
    document = alert_document(DECISION, config="/etc/healer/healer.toml", host="board")
    healer = document.pop("healer")
    assert document == {
        "version": 1,
        "action": "notify",
        "share": "fs0",
        "incident": "fs0#3",
        "rule": "restart-storm",
        "key": "fs0#3/notify/1",
        "time": "2026-12-04T10:00:05Z",
        "cause": {
            "kind": "VirtiofsdExited",
            "source": "healer:fs0",
            "line": 7,
            "time": "2026-12-04T10:00:00Z",
        },
    }
    assert (healer["host"], healer["config"]) == ("board", "/etc/healer/healer.toml")


def test_the_alert_goes_on_stdin_never_in_argv(tmp_path: Path) -> None:
    alert, record = hook(tmp_path)
    document = alert_document(DECISION, config="c.toml", host="board")
    assert send_alert(alert, document) == (Status.SUCCEEDED, "delivered to the alert command")
    got = orjson.loads(record.read_bytes())
    assert orjson.loads(got["stdin"]) == document
    assert got["argv"][1:] == [str(record)]  # its own argv, nothing of the alert
    assert {k: v for k, v in got["env"].items() if k in ALERT_ENV} == ALERT_ENV
    assert set(got["env"]) - set(ALERT_ENV) <= {"LC_CTYPE"}  # Python may add only this


def test_a_failing_hook_is_a_failed_action_with_its_reason(tmp_path: Path) -> None:
    alert, _ = hook(tmp_path, "import sys\nsys.stderr.write('pager down\\n')\nsys.exit(3)\n")
    assert send_alert(alert, {"x": 1}) == (
        Status.FAILED,
        "the alert command exited 3: pager down",
    )


def test_a_hook_that_hangs_is_killed_at_its_timeout(tmp_path: Path) -> None:
    alert, _ = hook(tmp_path, "import time\ntime.sleep(600)\n")
    quick = AlertConfig(alert.command, timeout=0.5)
    assert send_alert(quick, {"x": 1}) == (
        Status.TIMED_OUT,
        "the alert command ran over 0.5 s (killed)",
    )


def test_a_hook_that_cannot_run_is_a_failed_action(tmp_path: Path) -> None:
    missing = AlertConfig((str(tmp_path / "nothing-here"),))
    status, why = send_alert(missing, {"x": 1})
    assert status == Status.FAILED
    assert why.startswith("the alert command cannot run: ")


BASE = '[healer]\njournal = "/var/lib/healer"\n\n[[share]]\nname = "fs0"\nsocket = "/run/fs0.sock"\nshared_dir = "/srv"\n'


def test_the_alert_table(tmp_path: Path) -> None:
    path = tmp_path / "healer.toml"
    path.write_text(BASE + '\n[alert]\ncommand = ["/usr/local/bin/page", "--team", "x"]\n')
    assert load_config(path).alert == AlertConfig(("/usr/local/bin/page", "--team", "x"), 10.0)
    path.write_text(BASE)
    assert load_config(path).alert is None


@pytest.mark.parametrize(
    ("table", "line", "message"),
    [
        ('command = ["page"]', 10, "command must be an argv whose program is an absolute path"),
        ('command = "/bin/page"', 10, "command must be a list of strings"),
        ('command = ["/bin/page"]\ntimeout = 0', 11, "timeout = 0 is not a number in [0.1, 300.0]"),
        ('command = ["/bin/page"]\nurl = "x"', 11, "unknown key 'url'"),
        ("timeout = 5", 9, "command must be an argv whose program is an absolute path"),
    ],
)
def test_a_bad_alert_table_is_located(tmp_path: Path, table: str, line: int, message: str) -> None:
    path = tmp_path / "healer.toml"
    path.write_text(BASE + f"\n[alert]\n{table}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    found = [(p.line, p.message) for p in caught.value.problems]
    assert len(found) == 1, found
    assert found[0][0] == line
    assert message in found[0][1]
