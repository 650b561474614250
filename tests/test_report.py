"""Postmortem reports: replayed logs in, Markdown/HTML out, with exact numbers."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import pytest

import healer
from healer.engine import Decision, Engine, Transition
from healer.events import Event
from healer.parse import ClockNote, Repeat, Unrecognized
from healer.pipeline import Input, decide, replay
from healer.report import Collector, Postmortem, render_html, render_markdown, what_if, what_if_html
from healer.rulefiles import load_rules
from healer.runner import Runner

RULES = Path(__file__).resolve().parents[1] / "rules"
EXAMPLE = Path(healer.__file__).parent / "examples" / "incident-docker.log"

Item = Event | Unrecognized | Repeat | ClockNote | Decision | Transition


def stream(path: Path, rules: Path = RULES, *, keep: bool = False) -> list[Item]:
    runner = Runner(Engine(load_rules(rules)))
    items = replay([Input(path.name, str(path))], default_year=2024, keep_unrecognized=keep)
    return list(decide(items, runner))


def collect(
    items: Iterable[Item], *, max_entries: int = 200, max_incidents: int = 100
) -> Postmortem:
    collector = Collector(max_entries=max_entries, max_incidents=max_incidents)
    for item in items:
        collector.add(item)
    return collector.finish()


def postmortem(path: Path, rules: Path = RULES, **limits: int) -> Postmortem:
    return collect(stream(path, rules), **limits)


def vfs(clock: str, message: str) -> str:
    """A Rust virtiofsd line (env_logger format)."""
    return f"[2024-01-01T{clock}Z INFO  virtiofsd] {message}"


def exited(clock: str) -> str:
    """supervisord saw virtiofsd end with status 0."""
    return f"2024-01-01 {clock},000 INFO exited: virtiofsd (exit status 0; expected)"


def write(tmp_path: Path, name: str, lines: Iterable[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def clock(seconds: int) -> str:
    return f"{seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@pytest.fixture
def storm_log(tmp_path: Path) -> Path:
    """An exit, a reconnect 3 s later, then 6 exits within 60 s."""
    lines = [
        vfs("00:00:01", "Client connected, servicing requests"),
        vfs("00:00:02", "Client disconnected, shutting down"),
        exited("00:00:02"),
        vfs("00:00:05", "Client connected, servicing requests"),
        *(exited(clock(60 + 10 * n)) for n in range(6)),
    ]
    return write(tmp_path, "storm.log", lines)


def section(markdown: str, heading: str) -> str:
    """The text of one ``## heading`` section."""
    start = markdown.index(f"\n## {heading}")
    end = markdown.find("\n## ", start + 4)
    return markdown[start : end if end >= 0 else None]


def test_embedded_incident_first_failure_actions_and_detection_times() -> None:
    items = stream(EXAMPLE)
    pm = collect(items)
    events = {e.line: e for e in items if isinstance(e, Event)}
    reboot, timeout = events[5], events[11]
    assert (reboot.kind, timeout.kind) == ("VmRebootFailed", "BackendConnectTimeout")
    assert reboot.time is not None
    assert timeout.time is not None

    assert pm.incidents_total == 1
    assert len(pm.incidents) == 1
    (incident,) = pm.incidents
    first = incident.first_failure
    assert (first.kind, first.where, first.offset) == (
        "VmRebootFailed",
        "incident-docker.log:5",
        312,
    )
    assert first.raw == reboot.raw
    # The docker capture stamps the dumped boot.log within 40 ms, but line 11 says the
    # connect loop gave up "after trying for 1 minute": the fault began 60 s before it,
    # at 06:47:09.082698 (a reader's onset, not the first failure line's). The engine
    # decides notify on the VmRebootFailed line (06:48:09.043679): 59.960981 s after
    # the onset; the first healing action comes with line 11 itself, 60 s after.
    assert incident.began is not None
    assert incident.began.where == "incident-docker.log:11"
    assert incident.onset == round(timeout.time.timestamp() - 60.0, 6)
    assert incident.detected is not None
    assert incident.detected.action == "notify"
    assert incident.ttd == 59.960981
    assert incident.time_to_heal == 60.0
    assert incident.first_heal is not None
    assert incident.first_heal.action == "ensure_virtiofsd"
    assert not incident.recovered
    assert incident.ttr is None
    assert pm.not_recovered == 1
    assert pm.recovered_total == 0
    assert dict(incident.would_run) == {
        "ensure_virtiofsd": 1,
        "notify": 2,
        "readd_fs": 1,
        "remount_guest": 1,
    }

    text = render_markdown(pm, rules_digest="abc123", inputs=["incident-docker.log"])
    block = section(text, "Incident `default#1`")
    assert "`VmRebootFailed` at `incident-docker.log:5`" in block
    assert "```text\n" + reboot.raw + "\n```" in block
    for key in (
        "default#1/ensure_virtiofsd/1",
        "default#1/readd_fs/1",
        "default#1/remount_guest/1",
    ):
        assert f"`{key}`" in block
    assert "| Onset (as a line reports it) | 2022-12-26T06:47:09.082Z | 0.000 s |" in block
    assert "| First failure | 2022-12-26T06:48:09.043Z | 59.961 s |" in block
    assert "| First healing decision | 2022-12-26T06:48:09.082Z | 60.000 s |" in block
    assert "59.961 s (TTD)" in block
    onset_ttd_heal = "| 2022-12-26T06:47:09.082Z | 59.961 s | 60.000 s | not recovered |"
    assert onset_ttd_heal in section(text, "Summary")
    assert "not recovered before the end of the log" in block
    assert "| Rule set | `abc123` |" in text
    assert "`incident-docker.log`: 4 events" in text


def test_embedded_incident_header_gives_the_span_a_reader_sees_and_says_why() -> None:
    """The events' own stamps lie within 40 ms (06:48:09.043 to .083), a batch dump;
    cloud-hypervisor's uptime runs from 10.3 s (line 10) to 70.5 s (line 11), and the
    onset line 11 reports is 06:47:09.082698: the log tells of 60.000914 s."""
    pm = collect(stream(EXAMPLE))
    text = render_markdown(pm, rules_digest="abc123", inputs=["incident-docker.log"])
    header = text.split("## Summary")[0]
    assert (
        "| Time span | 2022-12-26T06:47:09.082Z to 2022-12-26T06:48:09.083Z (60.001 s of log"
        " time: from the onset `incident-docker.log:11` reports; the first event is at"
        " 2022-12-26T06:48:09.043Z) |"
    ) in header
    assert (
        "| Clocks | `incident-docker.log:11` wrapper timestamps are a batch dump; times from"
        " cloud-hypervisor's uptime, anchored at line 11 (70.509 s = 2022-12-26T06:48:09.082Z) |"
    ) in header
    assert [(n.line, n.what, n.wrapper) for n in pm.clocks] == [(11, "dump", "ch")]


def test_reconnect_three_seconds_after_the_exit_is_the_ttr(storm_log: Path) -> None:
    pm = postmortem(storm_log)
    first = pm.incidents[0]
    assert first.first_failure.where == "storm.log:2"
    assert first.recovered_by == "VirtiofsdClientConnected"
    assert first.recovery_where == "storm.log:4"
    assert first.ttr == 3.0
    assert pm.ttr.count == 1
    assert pm.ttr.mean == 3.0
    text = render_markdown(pm)
    assert "| Recovery | 2024-01-01T00:00:05.000Z | 3.000 s (TTR) | `storm.log:4` |" in text
    # The context before the onset is shown, not counted as part of the incident.
    assert "Before the onset" in section(text, "Incident `default#1`")


def test_restart_storm_opens_the_circuit_and_respawns_are_suppressed(
    storm_log: Path,
) -> None:
    pm = postmortem(storm_log)
    assert pm.incidents_total == 2
    assert pm.circuits_opened == 1
    storm = pm.incidents[1]
    assert storm.first_failure.where == "storm.log:5"
    (circuit,) = storm.circuits
    assert circuit.rule == "restart-storm"
    assert circuit.where == "storm.log:9"
    # The exit that trips the storm is not respawned, nor the one after it.
    assert dict(storm.suppressed) == {"remount_guest": 2, "respawn_virtiofsd": 2}
    assert dict(storm.suppressed_reasons) == {"circuit open": 4}
    text = render_markdown(pm)
    block = section(text, "Incident `default#2`")
    assert "| Circuit opened | 2024-01-01T00:01:40.000Z | 40.000 s | `storm.log:9` |" in block
    assert "| `default#2/respawn_virtiofsd/6` |" in block
    assert "suppressed: circuit open" in block
    assert "Circuits opened: 1." in text


def test_every_timeline_row_cites_where_its_data_came_from(storm_log: Path) -> None:
    text = render_markdown(postmortem(storm_log))
    rows = [r for r in section(text, "Timeline").splitlines() if r.startswith("| 20")]
    assert len(rows) > 20
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert re.fullmatch(r"`storm\.log:\d+`", cells[1]), row
    times = [r.split(" | ")[0] for r in rows]
    assert times == sorted(times)


def test_a_pair_rule_escalation_finds_its_old_cause(tmp_path: Path) -> None:
    """reconnect-after-reset: the VmReset line opens the incident 60 s later."""
    log = write(
        tmp_path,
        "pair.log",
        [
            "2024-01-01T00:00:00.000000000Z cloud-hypervisor: 12.50117339s: "
            "INFO:devices/src/acpi.rs:39 -- ACPI Reboot signalled",
            vfs("00:01:10", "Client connected, servicing requests"),
        ],
    )
    (incident,) = postmortem(log).incidents
    assert incident.first_failure.where == "pair.log:1"
    assert incident.first_failure.raw.endswith("ACPI Reboot signalled")
    assert incident.opened_by == "reconnect-after-reset"
    assert incident.ttd == 60.0
    assert incident.ttr == 70.0


def test_reports_are_byte_identical_for_the_same_input(storm_log: Path) -> None:
    one, two = postmortem(storm_log), postmortem(storm_log)
    assert render_markdown(one) == render_markdown(one) == render_markdown(two)
    assert render_html(one) == render_html(two)
    # Unknown records in the stream change nothing.
    with_unknown = collect(stream(storm_log, keep=True))
    assert render_markdown(with_unknown) == render_markdown(one)


def test_html_is_self_contained_and_escapes_the_log(tmp_path: Path) -> None:
    log = write(
        tmp_path,
        "evil.log",
        [
            "[2024-01-01T00:00:01Z ERROR virtiofsd] Waiting for daemon failed: <script>x</script> & co"
        ],
    )
    pm = postmortem(log)
    assert pm.incidents[0].first_failure.kind == "VirtiofsdDaemonFailed"
    assert pm.incidents[0].first_failure.raw.endswith("</script> & co")
    page = render_html(pm, title="A <b> & title")
    assert "<script" not in page
    assert "&lt;script&gt;x&lt;/script&gt; &amp; co" in page
    assert "<title>A &lt;b&gt; &amp; title</title>" in page
    assert not re.search(r'\b(src|href)="(?!#)', page)  # in-page anchors only (contents)
    assert "<svg" in page  # the incident's timeline, drawn inline
    assert page.startswith("<!DOCTYPE html>")
    assert page.endswith("</html>\n")
    markdown = render_markdown(pm)
    assert "<script>" in markdown  # inside the raw line's code block: literal
    assert "failed: \\<script>x\\</script> & co |" in section(markdown, "Timeline")


def test_long_incidents_fold_their_middle_and_stay_bounded(tmp_path: Path) -> None:
    lines = [exited(clock(10 * n)) for n in range(300)]
    items = stream(write(tmp_path, "long.log", lines))
    pm = collect(items, max_entries=40)
    (incident,) = pm.incidents
    outputs = [i for i in items if isinstance(i, Decision | Transition)]
    events = [i for i in items if isinstance(i, Event)]
    total = len(events) + len(outputs)
    kept = len(incident.entries) + len(incident.tail)
    # The head keeps its last event's decisions with it (a few rows over the limit).
    assert 30 <= len(incident.entries) <= 34
    assert len(incident.tail) == 10
    last_event = max(e.seq for e in incident.entries if e.type == "event")
    after = [e for e in incident.entries if e.seq > last_event]
    assert after
    assert {e.where for e in after} == {
        next(e.where for e in incident.entries if e.seq == last_event)
    }
    assert kept + sum(c.count for c in incident.collapsed) == total
    decisions = [o for o in outputs if isinstance(o, Decision)]
    assert incident.decisions == len(decisions)
    assert len(incident.actions) + len(incident.actions_tail) == 40
    folded = len(decisions) - 40
    assert sum(c.count for c in incident.actions_collapsed) == folded
    exits = next(c for c in incident.collapsed if c.what == "VirtiofsdExited")
    text = render_markdown(pm)
    assert f"VirtiofsdExited {exits.count} times" in section(text, "Incident `default#1`")
    assert f"{exits.count} rows folded, from {_iso_prefix(exits.first)}" in text


def _iso_prefix(seconds: float) -> str:
    from datetime import UTC, datetime  # noqa: PLC0415

    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def test_incidents_beyond_the_limit_are_counted_not_detailed(tmp_path: Path) -> None:
    lines = []
    for n in range(10):
        lines.append(vfs(clock(100 * n), "Client disconnected, shutting down"))
        lines.append(vfs(clock(100 * n + 2), "Client connected, servicing requests"))
    pm = postmortem(write(tmp_path, "many.log", lines), max_incidents=3)
    assert [i.id for i in pm.incidents] == ["default#1", "default#2", "default#3"]
    assert (pm.incidents_total, pm.recovered_total) == (10, 10)
    assert (pm.ttr.count, pm.ttr.mean, pm.ttd.count) == (10, 2.0, 10)
    assert "7 more incidents are counted in the summary but not detailed" in render_markdown(pm)


def rules_variant(tmp_path: Path, old: str, new: str) -> Path:
    text = (RULES / "healing.toml").read_text(encoding="utf-8")
    assert old in text
    folder = tmp_path / "rules-b"
    folder.mkdir()
    (folder / "healing.toml").write_text(text.replace(old, new, 1), encoding="utf-8")
    return folder


def test_what_if_without_respawn_on_exit_says_b_does_not_respawn(
    tmp_path: Path, storm_log: Path
) -> None:
    text = (RULES / "healing.toml").read_text(encoding="utf-8")
    start = text.index('[[rule]]\nid = "respawn-on-exit"')
    end = text.index("[[rule]]", start + 1)
    rules_b = rules_variant(tmp_path, text[start:end], "")
    a, b = postmortem(storm_log), postmortem(storm_log, rules_b)
    report = what_if(a, b, a_label="shipped", b_label="no-respawn")
    assert "- A = `shipped`\n- B = `no-respawn`" in report
    assert "- Incidents: A 2, B 1 (1 only with A)." in report
    assert "Only A opens an incident here (default#1, share default, rule respawn-on-exit)" in (
        report
    )
    assert "B never starts healing in 1 incident where A heals." in report
    # The storm incident is matched by share and time although B opens it later.
    assert (
        "A respawns virtiofsd (respawn_virtiofsd) 0.000 s after the first failure, "
        "4 times in all; B does not." in report
    )
    assert "B's only on VirtiofsdExited at storm.log:9 (rule restart-storm), 40.000 s later" in (
        report
    )
    assert "| `respawn_virtiofsd` would run | 5 | 0 |" in report


def test_what_if_with_a_lower_storm_count_opens_the_circuit_earlier(
    tmp_path: Path, storm_log: Path
) -> None:
    old = 'count = 5\nwindow = 60.0\non = ["VirtiofsdExited"'
    rules_b = rules_variant(tmp_path, old, old.replace("count = 5", "count = 3"))
    a, b = postmortem(storm_log), postmortem(storm_log, rules_b)
    report = what_if(a, b, a_label="shipped", b_label="storm-3")
    assert "- B opens the circuit earlier than A in 1 incident (by up to 20.000 s)." in report
    assert (
        "The circuit would open in A at 2024-01-01T00:01:40.000Z (40.000 s after the first "
        "failure, rule restart-storm) and in B at 2024-01-01T00:01:20.000Z (20.000 s, rule "
        "restart-storm). B opens it 20.000 s before A." in report
    )
    assert "respawn_virtiofsd: A 4 times (first 0.000 s after the first failure), B 2 times" in (
        report
    )
    assert "1 incident with the same decisions in both." in report
    # The same rules on both sides: nothing to weigh.
    same = what_if(a, postmortem(storm_log), a_label="x", b_label="y")
    assert "Nothing, for this capture: both rule sets make the same decisions" in same
    # The HTML form sits inside the page's body, escaped.
    page = render_html(a, appendix=what_if_html(a, b, a_label="<A>", b_label="storm-3"))
    assert "<code>&lt;A&gt;</code>" in page
    assert page.index("What if") < page.index("</body>")


def test_decisions_of_no_open_incident_are_listed_apart(tmp_path: Path) -> None:
    """An informational rule firing while the share is healthy opens no incident."""
    rule = (
        '\n[[rule]]\nid = "listening-info"\ndescription = "note it"\nseverity = "info"\n'
        'on = ["VirtiofsdListening"]\nactions = ["notify"]\n'
    )
    rules_b = tmp_path / "rules-info"
    rules_b.mkdir()
    text = (RULES / "healing.toml").read_text(encoding="utf-8")
    (rules_b / "healing.toml").write_text(text + rule, encoding="utf-8")
    log = write(
        tmp_path,
        "info.log",
        [
            vfs("00:00:02", "Client disconnected, shutting down"),
            vfs("00:00:05", "Client connected, servicing requests"),
            vfs("00:10:00", "Waiting for vhost-user socket connection..."),
        ],
    )
    pm = postmortem(log, rules_b)
    assert pm.incidents_total == 1
    assert pm.outside_total == 1
    (outside,) = pm.outside
    assert (outside.rule, outside.where) == ("listening-info", "info.log:3")
    assert dict(pm.incidents[0].would_run) == {"remount_guest": 1, "respawn_virtiofsd": 1}
    block = section(render_markdown(pm), "Decisions outside incidents")
    assert f"`{outside.key}`" in block
    assert "`info.log:3` VirtiofsdListening" in block
