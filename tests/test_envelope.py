"""Wrappers around log lines are peeled, and their timestamps kept."""

from __future__ import annotations

from datetime import UTC, datetime

from healer.parse.envelope import peel


def test_ci_runner_journald_and_kata_console_nest() -> None:
    """KA07: a CI timestamp, '# ', journald, kata logfmt, then a CH console line."""
    line = (
        '2026-02-23T20:59:32.3660923Z # Feb 23 20:59:27 runnervm kata[11764]: time="2026-02-23T20:59:27.909418536Z" '
        'level=debug msg="reading guest console" source=virtcontainers vmconsole="cloud-hypervisor:   '
        '7.831041s: <_disk4_q0> WARN:virtio-devices/src/block.rs:211 -- Request \\"x\\""'
    )
    env = peel(line, 2026)
    assert env.wrappers == ("rfc3339", "syslog", "kata")
    assert env.payload.startswith("cloud-hypervisor:   7.831041s: <_disk4_q0> WARN:")
    assert env.payload.endswith('Request "x"')
    assert env.wall == datetime(2026, 2, 23, 20, 59, 32, 366092, UTC)


def test_doubled_syslog_header_keeps_the_inner_pid() -> None:
    env = peel("Jan 02 10:00:00 host virtiofsd[189448]: host virtiofsd[189445]: Waiting", 2024)
    assert (env.program, env.pid, env.payload) == ("virtiofsd", 189445, "Waiting")


def test_vm_sh_minute_prefix_is_coarse() -> None:
    env = peel("20221226T06:48 cloud-hypervisor: 10.3s:  WARN:x.rs:1 -- y", 2024)
    assert env.wall == datetime(2022, 12, 26, 6, 48, tzinfo=UTC)
    assert not env.precise
    assert env.payload.startswith("cloud-hypervisor:")


def test_supervisord_line_under_journald() -> None:
    line = "Jul 30 00:00:12 nucsrv mvm[1536879]: 2024-07-30 00:00:12,663 WARN stopped: vfs (exit status 1)"
    env = peel(line, 2024)
    assert env.program == "supervisord"
    assert env.level == "WARN"
    assert env.payload == "stopped: vfs (exit status 1)"


def test_plain_payload_is_left_alone() -> None:
    assert (
        peel("virtio_session_mount: Waiting for vhost-user socket connection...", 2024).wrappers
        == ()
    )
