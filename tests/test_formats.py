"""Messages with no real excerpt in the corpus, built from the documented format strings.

Each line below is what the format string in the source (file and version noted; see
the README's format table) prints, so every kind healer knows is exercised, not only
those that public logs happened to show.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from conftest import EXCERPTS, parse, parse_excerpt

from healer.events import KINDS, to_dict
from healer.parse import cloud_hypervisor
from healer.parse.stream import SourceParser, Unrecognized

RECORDED = Path(__file__).parent / "fixtures" / "recorded-rust-virtiofsd.log"
"""Lines recorded for this project (not from public logs): each excerpt's ``### source:``
line says from which virtiofsd, how and when."""

CH28 = "cloud-hypervisor: 5.123456789s: <vmm> {level}:{loc} -- {msg}"
CH53 = "cloud-hypervisor:  12.500000s: <{thread}> {level}:{loc} -- {msg}\r"

CASES: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "v52+ timeout names the socket (vu_common_ctrl.rs:462 @v53.0)",
        CH53.format(
            thread="vmm",
            level="ERROR",
            loc="virtio-devices/src/vhost_user/vu_common_ctrl.rs:462",
            msg='Failed connecting the backend after trying for 1 minute for socket /run/fs0.sock: VhostUserProtocol(SocketConnect(Os { code: 2, kind: NotFound, message: "No such file or directory" }))',
        ),
        "BackendConnectTimeout",
        {"socket": "/run/fs0.sock", "share": "/run/fs0.sock", "error_kind": "NotFound", "errno": 2},
    ),
    (
        "main after v53: timeout wording",
        CH53.format(
            thread="vmm",
            level="ERROR",
            loc="vu_common_ctrl.rs:470",
            msg="Timed out waiting for vhost-user connection on socket /run/fs0.sock",
        ),
        "BackendConnectTimeout",
        {"socket": "/run/fs0.sock"},
    ),
    (
        "main after v53: a connect error that is not retried",
        CH53.format(
            thread="vmm",
            level="ERROR",
            loc="vu_common_ctrl.rs:480",
            msg='Failed connecting to vhost-user backend for socket /run/fs0.sock: VhostUserProtocol(SocketConnect(Os { code: 13, kind: PermissionDenied, message: "Permission denied" }))',
        ),
        "BackendConnectFailed",
        {"socket": "/run/fs0.sock", "error_kind": "PermissionDenied", "errno": 13},
    ),
    (
        "v52+ reconnect notice (vhost_user/mod.rs:393 @v53.0)",
        CH53.format(
            thread="_fs0",
            level="INFO",
            loc="virtio-devices/src/vhost_user/mod.rs:393",
            msg="vhost-user backend for socket /run/fs0.sock disconnected, attempting reconnection",
        ),
        "BackendDisconnected",
        {"socket": "/run/fs0.sock", "thread": "_fs0"},
    ),
    (
        "v16-v25 reconnect failure",
        CH28.format(
            level="ERROR",
            loc="virtio-devices/src/vhost_user/mod.rs:265",
            msg='failed to reconnect vhost-user backend: VhostUserProtocol(SocketConnect(Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }))',
        ),
        "BackendReconnectFailed",
        {"error_kind": "ConnectionRefused", "errno": 111},
    ),
    (
        "v26-v51 worker error wrapping the reconnect failure (thread_helper.rs:55)",
        'cloud-hypervisor: 5.1s: <_fs3> ERROR:virtio-devices/src/thread_helper.rs:55 -- Error running worker: HandleEvent(failed to reconnect vhost-user backend: IoError(Custom { kind: Other, error: "failed connecting vhost-user backend VhostUserConnect" }))',
        "BackendReconnectFailed",
        {"device_id": "_fs3"},
    ),
    (
        "v52+ NEEDS_RESET latch (virtio-devices/src/lib.rs:88)",
        CH53.format(
            thread="_fs1",
            level="WARN",
            loc="virtio-devices/src/lib.rs:88",
            msg="Corrupted request detected (_fs1: worker exited with error: HandleEvent(VhostUserBackend(Disconnected))). Setting device status to 'NEEDS_RESET' and stopping processing queues until reset.",
        ),
        "DeviceNeedsReset",
        {"device_id": "_fs1", "level": "WARN"},
    ),
    (
        "add-fs failure (vmm/src/lib.rs:2779 @v53.0)",
        CH53.format(
            thread="vmm",
            level="ERROR",
            loc="vmm/src/lib.rs:2779",
            msg="Error when adding new fs to the VM: DeviceManager(CreateVirtioFs(VhostUserConnect))",
        ),
        "AddFsFailed",
        {"chain": ["DeviceManager", "CreateVirtioFs", "VhostUserConnect"]},
    ),
    (
        "FsConfig Debug text up to v51 (device_manager.rs:2455 @v28.0)",
        CH28.format(
            level="INFO",
            loc="vmm/src/device_manager.rs:2455",
            msg='Creating virtio-fs device: FsConfig { tag: "myfs", socket: "/run/fs0.sock", num_queues: 1, queue_size: 1024, id: Some("_fs3"), pci_segment: 0 }',
        ),
        "FsDeviceCreating",
        {
            "tag": "myfs",
            "socket": "/run/fs0.sock",
            "device_id": "_fs3",
            "num_queues": 1,
            "queue_size": 1024,
            "share": "myfs",
        },
    ),
    (
        "FsConfig Debug text from v52 (pci_common first)",
        CH53.format(
            thread="vmm",
            level="INFO",
            loc="vmm/src/device_manager.rs:3266",
            msg='Creating virtio-fs device: FsConfig { pci_common: PciDeviceCommonConfig { id: Some("fs-a"), pci_segment: 0, iommu: false }, tag: "data", socket: "/tmp/a b.sock", num_queues: 1, queue_size: 1024 }',
        ),
        "FsDeviceCreating",
        {"tag": "data", "socket": "/tmp/a b.sock", "device_id": "fs-a"},
    ),
    (
        "VM reset event (vmm/src/lib.rs:2089 @v53.0)",
        CH53.format(thread="vmm", level="INFO", loc="vmm/src/lib.rs:2089", msg="VM reset event"),
        "VmReset",
        {"trigger": "VM reset event", "uptime": 12.5},
    ),
    (
        "vCPU saw the reset",
        CH28.format(level="INFO", loc="vmm/src/cpu.rs:998", msg="VmExit::Reset"),
        "VmReset",
        {},
    ),
    (
        "CMOS reset",
        CH28.format(level="INFO", loc="devices/src/legacy/cmos.rs:90", msg="CMOS reset"),
        "VmReset",
        {},
    ),
    (
        "guest acknowledged the eject (device_manager.rs:5091 @v53.0)",
        CH53.format(
            thread="vcpu0",
            level="INFO",
            loc="vmm/src/device_manager.rs:5091",
            msg="Ejecting device_id = _fs3 on segment_id=0",
        ),
        "DeviceRemoved",
        {"device_id": "_fs3"},
    ),
    (
        "v50+ event-monitor mirror line",
        CH53.format(
            thread="vmm",
            level="INFO",
            loc="event_monitor/src/lib.rs:114",
            msg="Event: source = vm event = device-removed id = _fs3 bdf = 0000:00:06.0",
        ),
        "DeviceRemoved",
        {"device_id": "_fs3", "bdf": "0000:00:06.0"},
    ),
    (
        "remove-device failure (vmm/src/lib.rs:2718 @v53.0)",
        CH53.format(
            thread="vmm",
            level="ERROR",
            loc="vmm/src/lib.rs:2718",
            msg='Error when removing device from the VM: DeviceManager(UnknownDeviceId("_fs9"))',
        ),
        "DeviceRemoveFailed",
        {"chain": ["DeviceManager", "UnknownDeviceId"]},
    ),
    (
        "v52+ every API error is logged (api/http/mod.rs:107)",
        CH53.format(
            thread="http-server",
            level="INFO",
            loc="vmm/src/api/http/mod.rs:107",
            msg='HTTP API error response: ["Error from device manager", "Identifier _fs3 is not unique"]',
        ),
        "ApiError",
        {"level": "INFO"},
    ),
    (
        "v38+ API request with detail",
        CH53.format(
            thread="vmm",
            level="INFO",
            loc="vmm/src/api/mod.rs:1450",
            msg='API request event: VmAddFs FsConfig { tag: "myfs" }',
        ),
        "ApiRequest",
        {"request": "VmAddFs"},
    ),
    (
        "VM exit event: the VMM shuts down",
        CH28.format(level="INFO", loc="vmm/src/lib.rs:1722", msg="VM exit event"),
        "VmmExited",
        {"reason": "VM exit event"},
    ),
    (
        "v48+ logger copy of the fatal error",
        CH53.format(
            thread="main",
            level="ERROR",
            loc="cloud-hypervisor/src/main.rs:900",
            msg="Fatal error: VmBoot(VmBoot(DeviceManager(CreateVirtioFs(VhostUserConnect))))",
        ),
        "VmmExited",
        {"chain": ["VmBoot", "VmBoot", "DeviceManager", "CreateVirtioFs", "VhostUserConnect"]},
    ),
    (
        "<= v0.11 fatal",
        "VMM thread failed VmReboot(DeviceManager(CreateVirtioFs(VhostUserConnect)))",
        "VmRebootFailed",
        {"vmm_exited": True},
    ),
    (
        "v0.12-v46 fatal, not a reboot",
        "VMM thread exited with error: Error booting VM: VmBoot(DeviceManager(CreateVirtioFs(VhostUserConnect)))",
        "VmmExited",
        {"chain": ["VmBoot", "DeviceManager", "CreateVirtioFs", "VhostUserConnect"]},
    ),
    (
        "ch-remote <= v46, error body (api_client/src/lib.rs:32 @v28.0)",
        "Error running command: Server responded with an error: InternalServerError: VmAddFs(DeviceManager(CreateVirtioFs(VhostUserConnect)))",
        "ApiError",
        {"status": "InternalServerError", "program": "ch-remote"},
    ),
    (
        "ch-remote success body for add-fs",
        '{"id":"_fs8","bdf":"0000:00:0a.0"}',
        "DeviceAdded",
        {"device_id": "_fs8", "bdf": "0000:00:0a.0"},
    ),
    (
        "peer-benchmark wrapper form",
        'ch-remote: Error: HttpApiClient(Socket(Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }))',
        "ApiUnreachable",
        {"errno": 111},
    ),
    (
        "Rust virtiofsd: second daemon on the socket (main.rs:752)",
        "[2025-01-02T03:04:05Z ERROR virtiofsd] Error creating pid file '/run/fs0.sock.pid': Resource temporarily unavailable (os error 11)",
        "VirtiofsdStartFailed",
        {"path": "/run/fs0.sock.pid", "error_kind": "WouldBlock", "errno": 11},
    ),
    (
        "Rust virtiofsd: missing shared dir (main.rs:663)",
        "[2025-01-02T03:04:05Z ERROR virtiofsd] /srv/share does not exist",
        "VirtiofsdStartFailed",
        {"path": "/srv/share"},
    ),
    (
        "Rust virtiofsd: bind failed (main.rs:757)",
        "[2025-01-02T03:04:05Z ERROR virtiofsd] Error creating listener: Address already in use (os error 98)",
        "VirtiofsdStartFailed",
        {"errno": 98},
    ),
    (
        "C virtiofsd: bind failed",
        "vhost socket bind: Permission denied",
        "VirtiofsdStartFailed",
        {"error_kind": "PermissionDenied"},
    ),
    (
        "old Rust panic format",
        "thread 'main' panicked at 'called `Option::unwrap()` on a `None` value', src/main.rs:293:18",
        "VirtiofsdPanicked",
        {"thread": "main", "location": "src/main.rs:293:18"},
    ),
    (
        "2019 out-of-tree C daemon",
        "virtio_session_mount: Waiting for QEMU socket connection...",
        "VirtiofsdListening",
        {"implementation": "c"},
    ),
    (
        "supervisord, expected exit",
        "2024-07-30 00:00:12,663 INFO exited: virtiofsd-fs0 (exit status 0; expected)",
        "VirtiofsdExited",
        {"status": 0, "expected": True, "time": "2024-07-30T00:00:12.663000Z"},
    ),
    (
        "supervisord, killed",
        "2024-07-30 00:00:12,663 WARN exited: virtiofsd (terminated by SIGKILL; not expected)",
        "VirtiofsdExited",
        {"signal": "SIGKILL", "status": None},
    ),
    (
        "systemd, killed",
        "Jul 30 00:00:12 host systemd[1]: virtiofsd@fs0.service: Main process exited, code=killed, status=9/KILL",
        "VirtiofsdExited",
        {"signal": "SIGKILL", "reporter": "systemd", "name": "virtiofsd@fs0"},
    ),
    (
        "systemd, exit status",
        "Jul 30 00:00:12 host systemd[1]: virtiofsd.service: Main process exited, code=exited, status=1/FAILURE",
        "VirtiofsdExited",
        {"status": 1},
    ),
    (
        "the user's while-true loop",
        "restarting virtiofsd",
        "VirtiofsdExited",
        {"reporter": "script"},
    ),
    (
        "guest power-off",
        "[   42.000001] reboot: Power down",
        "GuestReboot",
        {"action": "power-off"},
    ),
]


@pytest.mark.parametrize(
    ("line", "kind", "fields"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_documented_format(line: str, kind: str, fields: dict[str, Any]) -> None:
    (event,) = parse(line.encode() + b"\n")
    flat = to_dict(event)
    flat = {**flat, **flat["origin"], **flat["fields"]}
    assert event.kind == kind
    assert {name: flat[name] for name in fields} == fields


def test_event_monitor_object_spans_lines() -> None:
    """``--event-monitor`` writes pretty JSON objects separated by a blank line."""
    data = (
        b'{\n  "timestamp": {\n    "secs": 3,\n    "nanos": 500000000\n  },\n  "source": "vm",\n'
        b'  "event": "rebooting",\n  "properties": null\n}\n\n'
        b'{\n  "timestamp": {\n    "secs": 4,\n    "nanos": 0\n  },\n  "source": "vm",\n'
        b'  "event": "device-removed",\n  "properties": {\n    "id": "_fs0",\n    "bdf": "0000:00:05.0"\n  }\n}\n\n'
        b'{\n  "timestamp": {\n    "secs": 5,\n    "nanos": 0\n  },\n  "source": "vm",\n'
        b'  "event": "booted",\n  "properties": null\n}\n\n'
    )
    reset, removed, booted = parse(data)
    assert (reset.kind, reset.line, reset.origin.uptime) == ("VmReset", 1, 3.5)
    assert (removed.kind, removed.line, removed.offset) == (
        "DeviceRemoved",
        11,
        data.index(b"\n{\n", 10) + 1,
    )
    assert to_dict(removed)["fields"] == {"device_id": "_fs0", "bdf": "0000:00:05.0"}
    assert (booted.kind, to_dict(booted)["fields"]["event"]) == ("VmmLifecycle", "booted")


def test_an_event_monitor_object_nested_a_thousand_deep_is_read_and_harms_nothing() -> None:
    """A property nested 1,000 deep (orjson parses it; str() of it raises RecursionError)
    is no property, and the record is still the event it names; a source nested so is
    not an event at all; the records after both are read."""
    deep = b"[" * 1000 + b"]" * 1000
    data = (
        b'{\n  "timestamp": {\n    "secs": 1,\n    "nanos": 0\n  },\n  "source": "vm",\n'
        b'  "event": "device-removed",\n  "properties": {\n    "id": "_fs0",\n'
        b'    "x": ' + deep + b"\n  }\n}\n\n"
        b'{\n  "timestamp": {\n    "secs": 2,\n    "nanos": 0\n  },\n  "source": ' + deep + b",\n"
        b'  "event": "booted",\n  "properties": null\n}\n\n'
        b'{\n  "timestamp": {\n    "secs": 3,\n    "nanos": 0\n  },\n  "source": "vm",\n'
        b'  "event": "rebooting",\n  "properties": null\n}\n\n'
    )
    removed, reset = parse(data)
    fields = to_dict(removed)["fields"]
    assert (removed.kind, fields) == ("DeviceRemoved", {"device_id": "_fs0", "bdf": None})
    assert (reset.kind, reset.origin.uptime) == ("VmReset", 3.0)


def test_a_parser_that_raises_on_one_record_costs_that_record_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Whatever a parser's bug, the record it raised on is counted and the stream goes on."""
    real = cloud_hypervisor.parse_event_monitor

    def fragile(text: str) -> Any:
        if "boom" in text:
            raise RuntimeError("a parser bug")
        return real(text)

    monkeypatch.setattr(cloud_hypervisor, "parse_event_monitor", fragile)
    parser = SourceParser("ch.log", default_year=2026, keep_unrecognized=True)
    data = (
        b'{\n  "source": "vm",\n  "event": "boom"\n}\n\n'
        b'{\n  "source": "vm",\n  "event": "rebooting",\n  "properties": null\n}\n\n'
    )
    out = parser.parse_all(data)
    assert [type(o).__name__ for o in out] == ["Unrecognized", "VmReset"]
    assert isinstance(out[0], Unrecognized)
    assert (out[0].line, out[0].offset) == (1, 0)
    assert parser.stats.failed_records == 1


def test_rust_panic_message_on_the_next_line() -> None:
    data = b"thread 'vring_worker' panicked at src/main.rs:293:18:\ncalled `Result::unwrap()` on an `Err` value: Os { code: 9, kind: Uncategorized }\nnote: run with `RUST_BACKTRACE=1`\n"
    (event,) = parse(data)
    assert event.kind == "VirtiofsdPanicked"
    assert to_dict(event)["fields"]["errno"] == 9
    assert event.raw.count("\n") == 1


def recorded() -> dict[str, bytes]:
    """The excerpts of the recorded fixture by id."""
    text = RECORDED.read_bytes()
    found = re.findall(rb"^### id: (\w+)\n(.*?)(?=^### source:|\Z)", text, re.M | re.S)
    return {name.decode(): body for name, body in found}


def test_the_rust_sandbox_childs_death_is_one_typed_event() -> None:
    """Killing only the Rust daemon's sandbox child: the outer process says so (recorded
    from 1.13.2 and 1.14.0), then exits 247."""
    excerpts = recorded()
    assert list(excerpts) == ["RR01", "RR02"]
    assert [e.kind for e in parse(excerpts["RR01"], year=2026)] == [
        "VirtiofsdListening",
        "VirtiofsdChildTerminated",
    ]
    (died,) = parse(excerpts["RR02"], year=2026)
    flat = to_dict(died)
    assert (flat["kind"], flat["line"], flat["level"]) == ("VirtiofsdChildTerminated", 2, "ERROR")
    assert flat["time"] == "2026-12-03T08:38:12Z"
    assert flat["origin"]["location"] == "virtiofsd::util"
    assert flat["fields"] == {"signal": "SIGKILL", "signo": 9}
    assert flat["message"] == "Child process terminated by signal 9"


def test_every_kind_is_exercised_by_a_real_excerpt_or_a_format_case() -> None:
    seen = {kind for _, _, kind, _ in CASES}
    seen |= {e.kind for ex in EXCERPTS for e in parse_excerpt(ex)}
    seen |= {e.kind for body in recorded().values() for e in parse(body, year=2026)}
    # healer reports these itself (a daemon it started, a QEMU step it took): no log has them
    said_by_healer = {"VirtiofsdStarted"}
    assert seen | said_by_healer == set(KINDS)
    assert not seen & said_by_healer
