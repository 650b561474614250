"""Alerts delivered, end to end, with the real parts an operator runs.

A virtiofsd that cannot start (its shared_dir is missing) makes a restart storm under
``healer watch``; the circuit opens. A real Prometheus scrapes healer and evaluates the
shipped alert rules; a real Alertmanager (Debian's prometheus-alertmanager) routes the
alert to a webhook receiver this test runs on loopback. ``HealerRestartStorm`` must
arrive firing; once the directory exists and an operator resets the share, it must
arrive resolved. healer's own notify hook (``[alert] command``) must have been given
the storm's alert on its standard input.

Only the alert's windows are shortened (``for``, ``keep_firing_for`` and the range
windows of HealerRestartStorm, from minutes to seconds) and healer's backoff and
circuit retry, so that the storm and the recovery take seconds; the expressions are
the shipped ones. Waits are bounded; nothing is timed.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from conftest import end_child, required_program, wait_for
from rulepatch import patch_text, shipped_rules, write_rules
from test_prometheus import BOUND_S, PromServer, free_port
from watching import running_watch

from healer.supervise import DaemonInfo

ROOT = Path(__file__).resolve().parent.parent


class Webhook:
    """An Alertmanager webhook receiver on loopback: every notification it was sent."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        got = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                got.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def statuses(self, alertname: str, share: str) -> list[str]:
        """The status of each notification of ``alertname`` for ``share``, in order."""
        return [
            alert["status"]
            for body in self.received
            for alert in body.get("alerts", [])
            if alert["labels"].get("alertname") == alertname
            and alert["labels"].get("share") == share
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def storm_rules(target: Path) -> Path:
    """The shipped alert rules, HealerRestartStorm's windows in seconds."""
    text = (ROOT / "dashboards" / "healer-alerts.yml").read_text()
    start = text.index("      - alert: HealerRestartStorm")
    end = text.index("      - alert:", start + 1)
    block = text[start:end]
    block = patch_text(block, "[10m]", "[5s]", count=2)
    block = patch_text(block, "[15m]", "[5s]")
    block = patch_text(block, "for: 5m", "for: 1s")
    block = patch_text(block, "keep_firing_for: 10m", "keep_firing_for: 1s")
    target.write_text(text[:start] + block + text[end:])
    return target


@pytest.fixture
def alertmanager() -> str:
    """Debian's prometheus-alertmanager (scripts/test installs it)."""
    return required_program("prometheus-alertmanager", "prometheus-alertmanager")


def running(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()
    try:
        yield hook
    finally:
        hook.close()


def test_a_restart_storm_alert_is_delivered_and_resolved(
    tmp_path: Path,
    virtiofsd: DaemonInfo,
    prometheus: str,
    alertmanager: str,
    webhook: Webhook,
) -> None:
    am_port, prom_port, healer_port = free_port(), free_port(), free_port()
    (tmp_path / "alertmanager.yml").write_text(
        "route:\n  receiver: hook\n  group_by: [alertname, share]\n"
        "  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\n"
        "receivers:\n  - name: hook\n    webhook_configs:\n"
        f"      - url: {webhook.url}\n        send_resolved: true\n"
    )
    am = running(
        [
            alertmanager,
            f"--config.file={tmp_path / 'alertmanager.yml'}",
            f"--storage.path={tmp_path / 'am'}",
            f"--web.listen-address=127.0.0.1:{am_port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        tmp_path / "alertmanager.log",
    )
    rules = storm_rules(tmp_path / "healer-alerts.yml")
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 500ms\n  scrape_timeout: 400ms\n"
        "  evaluation_interval: 1s\n"
        f"rule_files:\n  - {rules}\n"
        "alerting:\n  alertmanagers:\n    - static_configs:\n"
        f"        - targets: ['127.0.0.1:{am_port}']\n"
        "scrape_configs:\n  - job_name: healer\n    static_configs:\n"
        f"      - targets: ['127.0.0.1:{healer_port}']\n"
    )
    prom = running(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--log.level=warn",
        ],
        tmp_path / "prometheus.log",
    )
    try:
        server = PromServer(f"127.0.0.1:{prom_port}")
        wait_for(lambda: prom.poll() is not None or server.ready(), BOUND_S)
        assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()
        assert am.poll() is None, (tmp_path / "alertmanager.log").read_text()
        config = write_config(tmp_path, healer_port)
        with running_watch(config):
            wait_for(lambda: "firing" in webhook.statuses("HealerRestartStorm", "fs0"), BOUND_S)
            (tmp_path / "shared").mkdir()
            reset = subprocess.run(
                [sys.executable, "-m", "healer", "reset", "fs0", "--config", str(config)],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert reset.returncode == 0, reset.stderr
            wait_for(lambda: "resolved" in webhook.statuses("HealerRestartStorm", "fs0"), BOUND_S)
    finally:
        end_child(prom)
        end_child(am)
    statuses = webhook.statuses("HealerRestartStorm", "fs0")
    assert statuses.index("firing") < len(statuses) - 1 - statuses[::-1].index("resolved")
    # healer's own hook heard of the storm, on its standard input
    got = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    storms = [a for a in got if a["share"] == "fs0" and a["action"] == "notify"]
    assert storms, got
    assert storms[0]["incident"].startswith("fs0#")
    assert storms[0]["cause"]["source"] in ("healer:fs0", "virtiofsd:fs0")


def write_config(tmp_path: Path, healer_port: int) -> Path:
    """One supervised share whose shared_dir is missing (every start fails), fast
    backoff and circuit retry, metrics on loopback, and a notify hook that appends
    what it reads to alerts.jsonl."""
    policy = shipped_rules().policy
    rules = replace(
        shipped_rules(),
        policy=replace(policy, backoff_initial_s=0.2, backoff_max_s=4.0, circuit_retry_s=2.0),
    )
    hook = tmp_path / "hook.py"
    hook.write_text(
        "import sys\n"
        f"with open({str(tmp_path / 'alerts.jsonl')!r}, 'a') as out:\n"
        "    out.write(sys.stdin.read())\n"
    )
    path = tmp_path / "healer.toml"
    path.write_text(
        f'[healer]\njournal = "{tmp_path / "journal"}"\n'
        f'rules = "{write_rules(rules, tmp_path / "rules")}"\n'
        f'metrics = "127.0.0.1:{healer_port}"\n\n'
        f'[[share]]\nname = "fs0"\nsocket = "{tmp_path / "fs0.sock"}"\n'
        f'shared_dir = "{tmp_path / "shared"}"\n\n'
        f'[alert]\ncommand = ["{sys.executable}", "{hook}"]\n'
    )
    return path
