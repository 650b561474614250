"""promtool on what healer ships: the alert rules, their unit tests, the example
configuration, and the exposition format of the metrics themselves."""

from __future__ import annotations

import subprocess
from pathlib import Path

from prometheus_client import generate_latest
from rulepatch import patch_text
from test_metrics import at, connected, exited

from healer.engine import Engine
from healer.journal import Journal
from healer.metrics import HealerMetrics
from healer.rulefiles import load_rules
from healer.runner import Runner

ROOT = Path(__file__).resolve().parent.parent


def promtool_run(promtool: str, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [promtool, *args], input=stdin, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_the_shipped_alert_rules_pass_promtool_check(promtool: str) -> None:
    out = promtool_run(promtool, "check", "rules", str(ROOT / "dashboards" / "healer-alerts.yml"))
    assert "SUCCESS: 5 rules found" in out


def test_every_alert_passes_its_promtool_unit_tests(promtool: str) -> None:
    out = promtool_run(
        promtool, "test", "rules", str(ROOT / "tests" / "promtool" / "healer-alerts.test.yml")
    )
    assert "SUCCESS" in out


def test_the_unit_tests_can_fail(promtool: str, tmp_path: Path) -> None:
    """Without keep_firing_for, the storm alert resolves too early: the tests say so."""
    rules = (ROOT / "dashboards" / "healer-alerts.yml").read_text()
    (tmp_path / "rules.yml").write_text(patch_text(rules, "keep_firing_for: 10m", "", count=2))
    tests = (ROOT / "tests" / "promtool" / "healer-alerts.test.yml").read_text()
    (tmp_path / "t.yml").write_text(
        patch_text(tests, "../../dashboards/healer-alerts.yml", "rules.yml")
    )
    result = subprocess.run(
        [promtool, "test", "rules", str(tmp_path / "t.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "alertname: HealerRestartStorm, time: 30m" in result.stdout + result.stderr


def test_the_example_prometheus_configuration_is_valid(promtool: str) -> None:
    out = promtool_run(
        promtool, "check", "config", str(ROOT / "dashboards" / "prometheus.example.yml")
    )
    assert "SUCCESS: 1 rule files found" in out


def test_the_exposition_passes_promtool_check_metrics(promtool: str, tmp_path: Path) -> None:
    """promtool lints names, suffixes, units and help texts of a live-like registry."""
    rules = load_rules(ROOT / "rules")
    metrics = HealerMetrics(
        rules.policy,
        shares={"fs0": "fs0"},
        supervised=["fs0"],
        sources=["boot.log", "virtiofsd:fs0"],
        journal=str(tmp_path),
    )
    runner = Runner(Engine(rules), Journal(tmp_path / "j"), observer=metrics)
    runner.start()
    runner.ingest([exited(0, 1), connected(3, 2)], read_at=None)
    runner.tick(at(4).timestamp())  # the session lasted: the connect is the recovery
    metrics.virtiofsd_started("fs0", 10)
    text = generate_latest(metrics.registry).decode()
    assert "healer_journal_writable 1.0" in text
    assert 'healer_recovery_duration_seconds_count{share="fs0"} 1.0' in text
    promtool_run(promtool, "check", "metrics", stdin=text)
    assert runner.journal is not None
    runner.journal.close()
