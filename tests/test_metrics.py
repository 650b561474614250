"""Metrics: what the observer counts, read back from a fresh registry as Prometheus sees it."""

from __future__ import annotations

import errno
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import wait_for
from prometheus_client.parser import text_string_to_metric_families

from healer.config import load_config
from healer.engine import Command, Decision, Engine, Transition
from healer.engine.core import backoff_delay
from healer.engine.model import Status
from healer.events import Event, VirtiofsdClientConnected, VirtiofsdExited
from healer.journal import Journal, Record, read_records
from healer.metrics import (
    EXPORTED,
    HealerMetrics,
    MetricsServer,
    TextfileWriter,
    exposition,
    failure_kinds,
)
from healer.metrics.exposition import MAX_CONNECTIONS
from healer.observe import FanOut, LineTally, NullObserver
from healer.parse import SourceParser
from healer.rulefiles import load_rules
from healer.runner import Runner

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def exited(seconds: float, line: int, share: str = "fs0") -> Event:
    return VirtiofsdExited(time=at(seconds), source="log", offset=line, line=line, share=share)


def connected(seconds: float, line: int, share: str = "fs0") -> Event:
    return VirtiofsdClientConnected(
        time=at(seconds), source="log", offset=line, line=line, share=share
    )


class Recorder(NullObserver):
    """A recording observer, as tests use one."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def transition(self, transition: Transition) -> None:
        self.calls.append(("transition", (transition.before, transition.after)))

    def action_finished(
        self, decision: Decision, status: str, seconds: float | None, detail: str = ""
    ) -> None:
        self.calls.append(("finished", (decision.action, status)))


def replayed(events: list[Event]) -> tuple[HealerMetrics, Runner]:
    rules = load_rules(ROOT / "rules")
    metrics = HealerMetrics(rules.policy)
    runner = Runner(Engine(rules), observer=metrics)
    for event in events:
        runner.ingest([event])
    runner.finish()  # the end of input: a connect still waiting counts as the recovery
    return metrics, runner


def value(metrics: HealerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_a_death_and_its_recovery_are_counted_and_timed() -> None:
    metrics, _ = replayed([exited(0, 1), connected(2.5, 2)])
    assert value(metrics, "healer_events_total", kind="VirtiofsdExited") == 1
    assert value(metrics, "healer_events_total", kind="VirtiofsdClientConnected") == 1
    assert value(metrics, "healer_events_total", kind="GuestReboot") == 0  # known: exported as 0
    assert value(metrics, "healer_failures_total", share="fs0", kind="VirtiofsdExited") == 1
    assert value(metrics, "healer_recoveries_total", share="fs0") == 1
    assert value(metrics, "healer_recovery_duration_seconds_count", share="fs0") == 1
    assert value(metrics, "healer_recovery_duration_seconds_sum", share="fs0") == 2.5
    assert value(metrics, "healer_recovery_duration_seconds_bucket", share="fs0", le="2.5") == 1
    assert value(metrics, "healer_recovery_duration_seconds_bucket", share="fs0", le="1.0") == 0
    assert value(metrics, "healer_last_recovery_timestamp_seconds", share="fs0") == (
        at(2.5).timestamp()
    )
    # a replay attempts nothing: what would run is counted as attempted
    assert value(metrics, "healer_actions_total", action="respawn_virtiofsd", share="fs0") == 1
    assert value(metrics, "healer_virtiofsd_restarts_total", share="fs0") == 1
    assert value(metrics, "healer_action_failures_total", action="readd_fs", share="fs0") == 0
    assert value(metrics, "healer_share_up", share="fs0") == 1
    assert value(metrics, "healer_share_phase", share="fs0", phase="healthy") == 1


def test_the_second_report_of_one_death_is_one_failure() -> None:
    metrics, _ = replayed([exited(0, 1), exited(1, 2)])  # no pid: the same death
    assert value(metrics, "healer_events_total", kind="VirtiofsdExited") == 2
    assert value(metrics, "healer_failures_total", share="fs0", kind="VirtiofsdExited") == 1
    assert value(metrics, "healer_share_up", share="fs0") == 0
    assert value(metrics, "healer_share_phase", share="fs0", phase="recovering") == 1


def test_a_storm_opens_the_circuit_and_the_gauges_say_so() -> None:
    storm = [exited(t, n) for n, t in enumerate([0, 10, 20, 30, 40], 1)]
    metrics, runner = replayed([*storm, exited(45, 6)])
    assert value(metrics, "healer_circuit_open", share="fs0") == 1
    assert value(metrics, "healer_share_phase", share="fs0", phase="circuit-open") == 1
    attempts = runner.state.shares["fs0"].attempt
    assert attempts >= 4
    expected = backoff_delay(runner.engine.policy, "fs0", attempts)
    assert value(metrics, "healer_backoff_seconds", share="fs0") == expected > 4
    assert (
        value(metrics, "healer_decisions_suppressed_total", action="respawn_virtiofsd", share="fs0")
        or 0
    ) >= 1
    # the recovery closes the circuit; after healthy_after the next respawn is immediate again
    metrics, runner = replayed([*storm, connected(400, 7), connected(500, 8)])
    assert value(metrics, "healer_circuit_open", share="fs0") == 0
    assert value(metrics, "healer_backoff_seconds", share="fs0") == 0
    assert value(metrics, "healer_recovery_duration_seconds_sum", share="fs0") == 400


class _Executor:
    def __init__(self, status: Status) -> None:
        self.status = status

    def run(self, decision: Decision) -> Status:
        return self.status


def test_labels_of_a_live_watchdog_are_the_configured_share_names() -> None:
    rules = load_rules(ROOT / "rules")
    metrics = HealerMetrics(
        rules.policy,
        shares={"fs0": "fs0", "tag0": "fs0", "/run/fs0.sock": "fs0"},
        supervised=["fs0"],
        sources=["boot.log"],
        failure_kinds=failure_kinds(rules),
    )
    runner = Runner(Engine(rules), executor=_Executor(Status.SUCCEEDED), observer=metrics)
    # 0 before the first failure: a counter that appears at 1 is invisible to increase()
    assert value(metrics, "healer_failures_total", share="fs0", kind="VirtiofsdExited") == 0
    assert value(metrics, "healer_failures_total", share="fs0", kind="GuestReboot") is None
    assert value(metrics, "healer_log_lines_total", source="boot.log") == 0
    assert value(metrics, "healer_actions_total", action="readd_fs", share="fs0") == 0
    assert value(metrics, "healer_share_up", share="fs0") == 0  # supervised, not running yet
    metrics.virtiofsd_started("fs0", 100)
    assert value(metrics, "healer_share_up", share="fs0") == 1
    assert value(metrics, "healer_virtiofsd_running", share="fs0") == 1
    runner.ingest([exited(0, 1, share="tag0")])
    metrics.virtiofsd_exited("fs0", 100)
    assert value(metrics, "healer_failures_total", share="fs0", kind="VirtiofsdExited") == 1
    assert value(metrics, "healer_share_up", share="fs0") == 0
    metrics.virtiofsd_started("fs0", 101)
    assert (
        value(metrics, "healer_virtiofsd_restarts_total", share="fs0") == 1
    )  # the first is no restart
    assert value(metrics, "healer_share_up", share="fs0") == 0  # started, not yet healthy
    runner.ingest([connected(1, 2, share="tag0")])
    # a connect is the recovery once its session has lasted stale_session (0.5 s)
    assert value(metrics, "healer_share_up", share="fs0") == 0
    runner.tick(at(1.5).timestamp())
    assert value(metrics, "healer_share_up", share="fs0") == 1
    assert metrics.label("/run/fs0.sock") == "fs0"
    assert value(metrics, "healer_recoveries_total", share="fs0") == 1


def test_attempts_and_failures_are_separate_counters_and_latency_uses_the_runner_clock() -> None:
    rules = load_rules(ROOT / "rules")
    metrics = HealerMetrics(rules.policy)
    recorder = Recorder()
    runner = Runner(
        Engine(rules),
        executor=_Executor(Status.FAILED),
        now=lambda: 100.25,
        observer=FanOut([metrics, recorder]),
    )
    runner.ingest([exited(0, 1)], read_at=100.0)
    runner.run_due()
    assert value(metrics, "healer_actions_total", action="respawn_virtiofsd", share="fs0") == 1
    assert (
        value(metrics, "healer_action_failures_total", action="respawn_virtiofsd", share="fs0") == 1
    )
    # remount_guest waits for the respawn, which failed: closed, neither attempt nor failure
    assert value(metrics, "healer_actions_total", action="remount_guest", share="fs0") == 0
    assert ("finished", ("respawn_virtiofsd", "failed")) in recorder.calls
    assert ("finished", ("remount_guest", "closed")) in recorder.calls
    assert ("transition", ("healthy", "failing")) in recorder.calls
    assert value(metrics, "healer_detection_latency_seconds_count") == 1
    assert value(metrics, "healer_detection_latency_seconds_sum") == 0.25


def test_a_journal_write_that_fails_is_counted_and_the_records_wait(tmp_path: Path) -> None:
    """A full disk does not stop healer: the failure is counted, the records wait in
    memory, and they are written once the journal takes writes again."""

    class FullDisk(Journal):
        full = True

        def append(self, records: Sequence[Record]) -> int:
            if self.full:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().append(records)

    rules = load_rules(ROOT / "rules")
    metrics = HealerMetrics(rules.policy, clock=lambda: 1234.0)
    good = Runner(Engine(rules), Journal(tmp_path / "ok"), observer=metrics)
    good.start()
    assert value(metrics, "healer_journal_records_total") == 1
    assert value(metrics, "healer_journal_last_write_timestamp_seconds") == 1234.0
    assert good.journal is not None
    good.journal.close()
    journal = FullDisk(tmp_path / "full")
    bad = Runner(Engine(rules), journal, observer=metrics)
    bad.start()
    bad.ingest([exited(0, 1)])
    # the start record failed; the event then waits without another try (retried every 2 s)
    assert value(metrics, "healer_journal_write_errors_total") == 1
    assert bad.degraded
    assert value(metrics, "healer_journal_degraded") == 1
    journal.full = False
    assert bad.flush(force=True)
    assert not bad.degraded
    assert value(metrics, "healer_journal_degraded") == 0
    journal.close()
    kinds = [type(r).__name__ for r in read_records(tmp_path / "full")]
    assert kinds[0] == "StartRecord"
    assert "EventRecord" in kinds
    assert "DecisionRecord" in kinds


def test_lines_of_a_record_still_open_are_not_unparsed_yet() -> None:
    rules = load_rules(ROOT / "rules")
    metrics = HealerMetrics(rules.policy)
    tally = LineTally()
    parser = SourceParser("ch.log", default_year=2026)
    parser.feed(b"noise one\nnoise two\n", 0)
    tally.report(metrics, "ch.log", parser)
    assert value(metrics, "healer_log_lines_total", source="ch.log") == 2
    # the last line may still be continued (an indented line, a chain): not unparsed yet
    assert value(metrics, "healer_unparsed_lines_total", source="ch.log") == 1
    panic = b"thread 'main' panicked at 'boom', src/main.rs:1:1\n"
    parser.feed(panic, 20)
    tally.report(metrics, "ch.log", parser)
    assert value(metrics, "healer_unparsed_lines_total", source="ch.log") == 2
    assert [e.kind for e in parser.close() if isinstance(e, Event)] == ["VirtiofsdPanicked"]
    tally.report(metrics, "ch.log", parser)
    assert value(metrics, "healer_log_lines_total", source="ch.log") == 3
    assert value(metrics, "healer_unparsed_lines_total", source="ch.log") == 2
    again = SourceParser("ch.log", default_year=2026)  # a new file: counts go on
    again.feed(b"more\n", 0)
    tally.report(metrics, "ch.log", again)
    assert value(metrics, "healer_log_lines_total", source="ch.log") == 4


def test_every_exported_family_is_in_the_catalogue_and_back(tmp_path: Path) -> None:
    rules = load_rules(ROOT / "rules")
    metrics = HealerMetrics(rules.policy, journal=str(tmp_path))
    suffix = {"counter": "_total", "info": "_info"}
    families = {f.name + suffix.get(f.type, ""): f.type for f in metrics.registry.collect()}
    assert families == {
        n: "gauge" if n == "healer_build_info" else t for n, t in EXPORTED.items()
    } | {"healer_build_info": "info"}


def test_metrics_are_served_on_loopback_and_written_atomically(tmp_path: Path) -> None:
    metrics, _ = replayed([exited(0, 1)])
    server = MetricsServer.start(metrics.registry, "127.0.0.1:0")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as r:
            body = r.read().decode()
    finally:
        server.stop()
    assert 'healer_failures_total{kind="VirtiofsdExited",share="fs0"} 1.0' in body
    target = tmp_path / "healer.prom"
    writer = TextfileWriter(metrics.registry, target, interval_s=3600)
    writer.start()
    writer.stop()
    assert writer.writes == 2
    assert target.read_text() == body
    assert [p.name for p in tmp_path.iterdir()] == ["healer.prom"]  # no temporary left
    missing = TextfileWriter(metrics.registry, tmp_path / "gone" / "healer.prom")
    missing.write()  # logged and counted, never raised into the watchdog
    assert missing.errors == 1


def test_idle_connections_to_metrics_are_bounded_and_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Connections that send nothing hold at most MAX_CONNECTIONS threads; one more is
    closed at once and counted; idle ones are closed after IDLE_S, and scrapes go on."""
    monkeypatch.setattr(exposition, "IDLE_S", 1.0)
    metrics, _ = replayed([exited(0, 1)])
    server = MetricsServer.start(metrics.registry, "127.0.0.1:0")
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(MAX_CONNECTIONS)]
    try:
        wait_for(lambda: server.server.slots._value == 0)
        threads = threading.active_count()
        extra = socket.create_connection(("127.0.0.1", server.port))
        extra.settimeout(10)
        assert extra.recv(1) == b""  # closed by the server, not served
        extra.close()
        assert server.refused == 1
        assert threading.active_count() <= threads
        for conn in idle:  # the server hangs up on each after IDLE_S
            conn.settimeout(30)
            assert conn.recv(1) == b""
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=10) as r:
            assert b"healer_failures_total" in r.read()
    finally:
        for conn in idle:
            conn.close()
        server.stop()


def test_replay_metrics_file_has_the_numbers_of_the_replay(tmp_path: Path) -> None:
    out = tmp_path / "replay.prom"
    healer = [sys.executable, "-m", "healer", "replay"]
    log = ROOT / "healer" / "examples" / "incident-vm.sh.log"
    subprocess.run([*healer, "--metrics", str(out), str(log)], check=True, capture_output=True)
    counts = orjson.loads(
        subprocess.run(
            [*healer, "--format", "counts", str(log)], check=True, capture_output=True
        ).stdout
    )
    samples = _samples(out.read_text())
    source = str(log)
    assert samples[("healer_log_lines_total", (("source", source),))] == counts["lines"]
    assert samples[("healer_unparsed_lines_total", (("source", source),))] == counts["unparsed"]
    for kind, n in counts["kinds"].items():
        assert samples[("healer_events_total", (("kind", kind),))] == n
    journal = subprocess.run(
        [*healer, "--format", "jsonl", str(log)], check=True, capture_output=True
    ).stdout
    decided = [orjson.loads(line) for line in journal.splitlines()]
    would_run = [d for d in decided if d.get("type") == "decision" and not d["suppressed"]]
    actions = sum(v for (name, _), v in samples.items() if name == "healer_actions_total")
    assert actions == len(would_run) > 0


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_a_configuration_can_turn_metrics_off_and_name_a_textfile(tmp_path: Path) -> None:
    base = f'[[share]]\nname = "fs0"\nsocket = "{tmp_path}/s.sock"\nshared_dir = "{tmp_path}"\n'
    (tmp_path / "a.toml").write_text(
        f'[healer]\njournal = "{tmp_path}/j"\nmetrics = "off"\n'
        f'metrics_textfile = "{tmp_path}/healer.prom"\n{base}'
    )
    config = load_config(tmp_path / "a.toml")
    assert config.metrics == ""
    assert config.metrics_textfile == f"{tmp_path}/healer.prom"
    shown = subprocess.run(
        [sys.executable, "-m", "healer", "check", str(tmp_path / "a.toml")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "  metrics: off\n" in shown
    assert f"  metrics textfile: {tmp_path}/healer.prom (every 10 s)\n" in shown
    (tmp_path / "b.toml").write_text(
        f'[healer]\njournal = "{tmp_path}/j"\nmetrics_textfile = "healer.txt"\n{base}'
    )
    result = subprocess.run(
        [sys.executable, "-m", "healer", "check", str(tmp_path / "b.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 4
    assert f"{tmp_path / 'b.toml'}:3: metrics_textfile 'healer.txt' is not an absolute path" in (
        result.stderr
    )


def test_a_paused_share_says_so_in_the_metrics() -> None:
    rules = load_rules(ROOT / "rules")
    metrics = HealerMetrics(rules.policy)
    runner = Runner(Engine(rules), observer=metrics)
    runner.ingest([exited(0, 1)])
    assert value(metrics, "healer_share_paused", share="fs0") == 0
    runner.command(Command(1.0, "pause", "fs0", uid=0))
    assert value(metrics, "healer_share_paused", share="fs0") == 1
    runner.command(Command(2.0, "resume", "fs0", uid=0))
    assert value(metrics, "healer_share_paused", share="fs0") == 0
