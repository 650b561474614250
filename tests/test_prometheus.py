"""A real Prometheus scrapes a real ``healer watch`` while its virtiofsd is killed.

Prometheus (Debian's package) runs on loopback with a short scrape interval and the
shipped alert rules; ``healer watch`` supervises the real virtiofsd with metrics on
a free loopback port. After a SIGKILL of the daemon, the restart, the failure and the
recovery must be visible through Prometheus' HTTP query API, and every shipped alert
rule must evaluate without error. Waits are bounded; no timing is asserted.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import end_child, wait_for
from rulepatch import patch_text
from watching import kill_serving_daemon, running_watch, serving

from healer.sim import VhostUserFrontend
from healer.supervise import DaemonInfo
from healer.supervise.process import exists

ROOT = Path(__file__).resolve().parent.parent
BOUND_S = 90.0  # generous: a shared 2-core machine; nothing is timed


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PromServer:
    """A Prometheus server on loopback and its HTTP API."""

    def __init__(self, address: str) -> None:
        self.address = address

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"http://{self.address}{path}{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def value(self, query: str) -> float | None:
        """The single value of an instant query, or None when it has no result."""
        result = self.get("/api/v1/query", query=query)["result"]
        if not result:
            return None
        assert len(result) == 1, result
        return float(result[0]["value"][1])

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.address}/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False


@pytest.fixture
def healer_port() -> int:
    return free_port()


@pytest.fixture
def prom(prometheus: str, tmp_path: Path, healer_port: int) -> Iterator[PromServer]:
    port = free_port()
    rules = tmp_path / "healer-alerts.yml"
    rules.write_text((ROOT / "dashboards" / "healer-alerts.yml").read_text())
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n"
        "  evaluation_interval: 1s\n"
        f"rule_files:\n  - {rules}\n"
        "scrape_configs:\n  - job_name: healer\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{healer_port}']\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    server = PromServer(f"127.0.0.1:{port}")
    try:
        wait_for(lambda: proc.poll() is not None or server.ready(), BOUND_S)
        assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
        yield server
    finally:
        end_child(proc)
        log.close()


@pytest.fixture
def config(tmp_path: Path, virtiofsd: DaemonInfo, healer_port: int) -> Path:
    (tmp_path / "shared").mkdir()
    guest = tmp_path / "guest.py"
    guest.write_text("import sys\n")  # the guest remount succeeds and does nothing
    path = tmp_path / "healer.toml"
    path.write_text(
        f'[healer]\njournal = "{tmp_path / "journal"}"\nrules = "{ROOT / "rules"}"\n'
        f'metrics = "127.0.0.1:{healer_port}"\n\n'
        f'[[share]]\nname = "fs0"\nsocket = "{tmp_path / "fs0.sock"}"\n'
        f'shared_dir = "{tmp_path / "shared"}"\n\n'
        f'[guest]\nremount = ["{sys.executable}", "{guest}"]\nmount_point = "/mnt/fs0"\n'
    )
    return path


def test_prometheus_sees_the_restart_and_the_recovery(prom: PromServer, config: Path) -> None:
    sock = config.parent / "fs0.sock"
    with running_watch(config):
        wait_for(lambda: serving(config), BOUND_S)
        # scraped, up, the share healthy and nothing restarted yet
        wait_for(lambda: prom.value('healer_share_up{job="healer",share="fs0"}') == 1, BOUND_S)
        assert prom.value('up{job="healer"}') == 1
        assert prom.value('healer_virtiofsd_restarts_total{share="fs0"}') == 0
        assert prom.value('healer_recoveries_total{share="fs0"}') == 0
        with VhostUserFrontend(str(sock), timeout_s=10) as client:
            assert client.get_features()
            first = kill_serving_daemon(config)
        wait_for(lambda: not exists(first), BOUND_S)
        # The VMM reconnects: the respawned daemon serves it ("Client connected"),
        # which is the recovery signal. Kept open: closing it would end that daemon too.
        with VhostUserFrontend(str(sock), timeout_s=30) as again:
            assert again.get_features()
            wait_for(lambda: prom.value('healer_recoveries_total{share="fs0"}') == 1, BOUND_S)
            assert prom.value('healer_virtiofsd_restarts_total{share="fs0"}') == 1
            # one death is one failure, whichever report of it came first: healer's
            # exit event, or the C virtiofsd's sandboxed child saying "virtio_loop: Exit"
            # as it follows its killed parent
            assert prom.value('sum(healer_failures_total{share="fs0"})') == 1
            kinds = prom.get("/api/v1/query", query='healer_failures_total{share="fs0"} > 0')
            assert {r["metric"]["kind"] for r in kinds["result"]} <= {
                "VirtiofsdExited",
                "VirtiofsdClientDisconnected",
            }
            assert prom.value('healer_actions_total{share="fs0",action="respawn_virtiofsd"}') == 1
            assert prom.value('healer_recovery_duration_seconds_count{share="fs0"}') == 1
            # The detection histogram is exposed. Its samples come from log lines that
            # decide at once; here the death is decided on healer's own exit report and
            # the recovery by the engine's timer once the session lasted stale_session:
            # no line decided anything, so the count stays 0.
            assert prom.value("healer_detection_latency_seconds_count") is not None
            assert (prom.value('healer_events_total{kind="VirtiofsdExited"}') or 0) >= 1
            # PromQL over the scraped series, as the dashboard and the alerts use them
            assert (
                prom.value('increase(healer_virtiofsd_restarts_total{share="fs0"}[5m])') or 0
            ) > 0
            wait_for(lambda: prom.value('healer_share_up{share="fs0"}') == 1, BOUND_S)
            assert prom.value('healer_circuit_open{share="fs0"}') == 0
            assert prom.value("healer_journal_writable") == 1
            # every dashboard query runs on the real server (variables filled in) and
            # shows something: no series appears out of nothing, so increase() sees the
            # first failure of a kind too
            empty = [
                expr
                for expr in _dashboard_queries()
                if not prom.get("/api/v1/query", query=expr)["result"]
            ]
            assert not empty
            # every shipped alert rule loaded and evaluates without error; none fires
            wait_for(lambda: _rule_health(prom) == {"ok"}, BOUND_S)
            rules = [r for g in prom.get("/api/v1/rules")["groups"] for r in g["rules"]]
            assert len(rules) == 5
            # (HealerShareDown may be pending: an evaluation saw the share down while it
            # was being healed; it fires only after 5 minutes of that)
            alerts = prom.get("/api/v1/alerts")["alerts"]
            assert [a for a in alerts if a["state"] != "pending"] == []
            assert {a["labels"]["alertname"] for a in alerts} <= {"HealerShareDown"}


def _dashboard_queries() -> list[str]:
    dashboard = json.loads((ROOT / "dashboards" / "healer.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    filled = {"$job": "healer", "$instance": ".*", "$share": ".*"}
    out = []
    for expr in exprs:
        query = expr
        for name, value in filled.items():
            query = query.replace(name, value)
        assert "$" not in query, query
        out.append(query)
    return out


def _rule_health(prom: PromServer) -> set[str]:
    groups = prom.get("/api/v1/rules")["groups"]
    return {rule["health"] for group in groups for rule in group["rules"]}


def test_the_textfile_mode_writes_what_node_exporter_reads(
    config: Path, promtool: str, healer_port: int
) -> None:
    """metrics = "off" serves nothing; the textfile is written at start and at stop."""
    textfile = config.parent / "textfile" / "healer.prom"
    textfile.parent.mkdir()
    text = patch_text(
        config.read_text(),
        f'metrics = "127.0.0.1:{healer_port}"',
        f'metrics = "off"\nmetrics_textfile = "{textfile}"',
    )
    config.write_text(text)
    with running_watch(config):
        wait_for(lambda: serving(config), BOUND_S)
        wait_for(textfile.exists, BOUND_S)
        with socket.socket() as probe:  # nothing listens on the metrics port
            assert probe.connect_ex(("127.0.0.1", healer_port)) != 0
    final = textfile.read_text()
    # written as healer stopped: its daemon is the holder's and still served then
    assert 'healer_virtiofsd_running{share="fs0"} 1.0' in final
    assert 'healer_log_lines_total{source="virtiofsd:fs0"}' in final
    assert [p.name for p in textfile.parent.iterdir()] == ["healer.prom"]
    result = subprocess.run(
        [promtool, "check", "metrics"], input=final, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_taken_metrics_port_does_not_stop_the_healing(config: Path, healer_port: int) -> None:
    sock = config.parent / "fs0.sock"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", healer_port))
        taken.listen()
        with running_watch(config):  # it must also stop cleanly (exit 0)
            wait_for(lambda: serving(config), BOUND_S)
            with VhostUserFrontend(str(sock), timeout_s=10) as client:
                assert client.get_features()
