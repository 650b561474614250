"""The Grafana dashboard and the alert rules query what healer really exports.

Every PromQL expression (panels, template variables, alerts) is read for the metric
names it selects; each must be a series healer exports, or one of the few series of
Prometheus and node_exporter named below. The dashboard must provision from a file.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from healer.metrics import EXPORTED, HealerMetrics
from healer.rulefiles import load_rules

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "dashboards" / "healer.json"
ALERTS = ROOT / "dashboards" / "healer-alerts.yml"
ALERT_TESTS = ROOT / "tests" / "promtool" / "healer-alerts.test.yml"
README = ROOT / "docs" / "metrics.md"  # (the README links it)

EXTERNAL = {
    "up": "Prometheus: 1 when the last scrape of the target succeeded",
    "node_textfile_mtime_seconds": "node_exporter's textfile collector: a file's mtime",
}

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "bool", "offset"}
_KEYWORDS |= {"group_left", "group_right", "inf", "nan"}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NUMBER = re.compile(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (Grafana variables removed)."""
    text = re.sub(r"\$\{?\w+\}?", "", expr)
    text = _STRING.sub("", text)
    text = re.sub(r"\{[^{}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _GROUPING.sub("", text)
    text = re.sub(r"\boffset\s+-?\w+", "", text)
    text = _NUMBER.sub("", text)
    names = set()
    for m in _NAME.finditer(text):
        rest = text[m.end() :].lstrip()
        if rest.startswith("(") or m.group() in _KEYWORDS:
            continue  # a function or an operator
        names.add(m.group())
    return names


def exported_series(tmp_path: Path) -> set[str]:
    """Every series name the live metrics expose (families as they go on the wire)."""
    metrics = HealerMetrics(
        load_rules(ROOT / "rules").policy, shares={"fs0": "fs0"}, journal=str(tmp_path)
    )
    names = set()
    for family in metrics.registry.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_count", "_sum"),
            "info": ("_info",),
        }.get(family.type, ("",))
        names |= {family.name + s for s in suffixes}
    return names


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_exprs() -> list[str]:
    exprs = [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]
    for var in dashboard()["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", var["definition"])
            assert m is not None, var["definition"]
            exprs.append(m.group(1))
    return exprs


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_the_extractor_finds_names_and_only_names() -> None:
    expr = (
        'histogram_quantile(0.9, sum by (le, share) (rate(healer_x_bucket{job="$job", '
        'share=~"a|b"}[5m]))) > 1e3 or on (share) absent(up{job="x"}) unless '
        "healer_y_total offset 5m and time() - node_z_seconds > 16 * 1024"
    )
    assert metric_names(expr) == {"healer_x_bucket", "up", "healer_y_total", "node_z_seconds"}


def test_every_promql_expression_refers_to_metrics_healer_exports(tmp_path: Path) -> None:
    exported = exported_series(tmp_path)
    assert "healer_virtiofsd_restarts_total" in exported
    assert "healer_recovery_duration_seconds_bucket" in exported
    exprs = dashboard_exprs() + [rule["expr"] for rule in alert_rules()]
    assert len(exprs) > 20
    used: set[str] = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        unknown = names - exported - set(EXTERNAL)
        assert not unknown, f"{expr!r} queries {sorted(unknown)}, which healer does not export"
        used |= names
    assert "healer_share_up" in used
    assert "healer_detection_latency_seconds_bucket" in used


def test_a_misspelt_metric_would_be_caught(tmp_path: Path) -> None:
    bad = "sum(increase(healer_virtiofsd_restart_total[5m]))"  # 'restart', not 'restarts'
    assert metric_names(bad) - exported_series(tmp_path) == {"healer_virtiofsd_restart_total"}


def test_the_dashboard_provisions_from_a_file() -> None:
    text = DASHBOARD.read_text()
    data = dashboard()
    assert "${DS_" not in text  # only the import screen fills those
    assert "__inputs" not in data
    assert data["uid"] == "healer-virtiofs"
    assert 8 <= len(data["uid"]) <= 40
    assert data["schemaVersion"] >= 39
    assert data.get("id") is None
    (source,) = [v for v in data["templating"]["list"] if v["type"] == "datasource"]
    assert (source["name"], source["query"]) == ("datasource", "prometheus")
    ids = [p["id"] for p in data["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in data["panels"]:
        if p["type"] != "row":
            assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            for t in p["targets"]:
                assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert p["description"]
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"panel {p['title']!r} overlaps another"
        cells |= mine


def test_the_provisioning_examples_point_at_the_dashboard() -> None:
    provider = yaml.safe_load((ROOT / "dashboards/provisioning/dashboards/healer.yaml").read_text())
    (entry,) = provider["providers"]
    assert entry["type"] == "file"
    assert entry["options"]["path"]
    sources = yaml.safe_load(
        (ROOT / "dashboards/provisioning/datasources/prometheus.yaml").read_text()
    )
    assert sources["datasources"][0]["type"] == "prometheus"


def test_every_alert_is_documented_and_unit_tested() -> None:
    readme = README.read_text()
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    firing = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case["exp_alerts"]
    }
    quiet = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if not case["exp_alerts"]
    }
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == 5
    for rule in alert_rules():
        name = rule["alert"]
        assert name in firing, f"{name}: no test that it fires"
        assert name in quiet, f"{name}: no test that it stays quiet"
        assert rule["labels"]["severity"] in ("warning", "critical")
        notes = rule["annotations"]
        assert notes["summary"]
        assert notes["description"]
        anchor = notes["runbook_url"].removeprefix("docs/metrics.md#")
        assert anchor == name.lower()
        assert f"\n#### {name}\n" in readme, f"{name}: no runbook section in docs/metrics.md"


@pytest.mark.parametrize("title", [p["title"] for p in dashboard()["panels"]])
def test_every_panel_is_described_in_the_readme(title: str) -> None:
    assert f"**{title}**" in README.read_text()


def test_every_metric_is_in_the_readme_table() -> None:
    readme = README.read_text()
    for name in EXPORTED:
        assert f"| `{name}` |" in readme, name
