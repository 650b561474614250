"""What a reader of each real excerpt expects, written down by hand.

The golden files pin every byte; this table states the meaning: which line of the
excerpt is which kind of event, with the fields that matter for healing. Excerpts
that hold nothing to heal (debug traffic, warnings, a human-written summary table)
must give no event at all.
"""

from __future__ import annotations

from typing import Any

import pytest
from conftest import EXCERPTS, Excerpt, parse_excerpt

from healer.events import to_dict

REFUSED = {"error_kind": "ConnectionRefused", "errno": 111}
CONNECT_CHAIN = {"chain": ["VhostUserProtocol", "SocketConnect"], **REFUSED}
REBOOT_CHAIN = ["DeviceManagerApiError", "ResponseRecv", "RecvError", "CreateVirtioFs"]

EXPECTED: dict[str, list[tuple[int, str, dict[str, Any]]]] = {
    # The user's incident (docker prefixes): reboot fails, CH exits, the API is gone.
    "CH01": [
        (5, "VmRebootFailed", {"vmm_exited": True, "chain": [*REBOOT_CHAIN, "VhostUserConnect"]}),
        (7, "ApiUnreachable", REFUSED),
        (11, "BackendConnectTimeout", {**CONNECT_CHAIN, "time": "2022-12-26T06:48:09.082698Z"}),
        (12, "ApiUnreachable", REFUSED),
    ],
    # The same incident, re-wrapped by hand onto indented continuation lines.
    "CH02": [
        (5, "VmRebootFailed", {"vmm_exited": True}),
        (8, "ApiUnreachable", REFUSED),
        (13, "BackendConnectTimeout", {**CONNECT_CHAIN, "uptime": 70.509301809}),
        (16, "ApiUnreachable", REFUSED),
    ],
    "CH03": [
        (1, "ApiRequest", {"request": "VmReboot"}),
        *((n, "DeviceWorkerStopped", {}) for n in (7, 8, 10, 11)),
        (9, "DeviceWorkerStopped", {"device_id": "_fs2", "thread": "_fs2"}),
    ],
    "CH07": [
        (2, "GuestReboot", {"action": "restart", "uptime": 11.060801}),
        # i8042's report of the same reset, 178 us later, is a repeat of line 3
        (3, "VmReset", {"trigger": "ACPI Reboot signalled", "uptime": 12.50117339}),
    ],
    "CH09": [
        (1, "VirtiofsdListening", {"implementation": "c"}),
        (8, "VirtiofsdClientConnected", {"implementation": "c"}),
        (
            9,
            "VmmExited",
            {
                "chain": [
                    "DeviceManager",
                    "CreateVirtioFs",
                    "VhostUserGetProtocolFeatures",
                    "VhostUserProtocol",
                    "PartialMessage",
                ]
            },
        ),
    ],
    "CH11": [(1, "ApiRequest", {"request": "VmBoot", "uptime": 0.00255874})],
    "CH12": [],
    "CH14": [],
    "CH15": [],
    "CH16": [(n, "ApiRequest", {"request": "VmInfo"}) for n in (3, 4, 5)],
    # v47 printed the fatal chain through the logger, one record per level.
    "CH17": [
        (1, "VmmExited", {"error_kind": "NotFound", "errno": 2, "reason": "Error booting VM"})
    ],
    "CH18": [(1, "VmmExited", {"chain": ["VmBoot", "VmBoot", "FirmwareFile"], "errno": 2})],
    "CH19": [(1, "VmmExited", {"reason": "Error booting VM"})],
    "CH20": [
        (
            1,
            "VmmExited",
            {
                "causes": [
                    "Error booting VM",
                    "The VM could not boot",
                    "Error locking disk images: Another instance likely holds a lock",
                    "Cannot lock images of all block devices",
                    "Failed to get Write lock for disk image: ./img.raw",
                    "The file is already locked",
                ]
            },
        )
    ],
    "CH22": [(1, "ApiError", {"status": "InternalServerError", "program": "ch-remote"})],
    "CH23": [
        (
            1,
            "VmmLifecycle",
            {"event_source": "virtio-device", "event": "activated", "properties": {"id": "_disk0"}},
        )
    ],
    "CH24": [],
    "GU01": [
        (2, "GuestMountFailed", {"mountpoint": "/home/dev/video", "share": "video"}),
        (6, "GuestTagNotFound", {"tag": "video", "share": "video", "uptime": 27.772246}),
        (7, "GuestTagNotFound", {"tag": "video"}),
    ],
    "GU02": [(2, "GuestMountFailed", {"mountpoint": "/mnt", "tag": "share"})],
    "GU04": [
        (
            1,
            "GuestMountFailed",
            {"reason": "unknown filesystem type virtiofs", "time": "2025-05-08T12:14:47Z"},
        ),
        (4, "GuestMountFailed", {"mountpoint": "/mnt/docker"}),
    ],
    "GU05": [(1, "GuestReboot", {"action": "restart"})],
    "KA02": [
        (
            1,
            "VirtiofsdListening",
            {"implementation": "c", "pid": 184280, "time": "2021-03-29T17:05:28Z"},
        )
    ],
    "KA04": [(4, "VirtiofsdClientDisconnected", {"implementation": "c"})],
    "KA05": [(3, "VirtiofsdExited", {"reporter": "kata"})],
    "KA06": [(1, "VirtiofsdExited", {"reporter": "kata", "level": "WARN"})],
    "KA07": [],
    "VC01": [
        (1, "VirtiofsdListening", {"time": "2022-01-25T21:30:55.948856Z"}),
        (2, "VirtiofsdClientConnected", {"implementation": "c"}),
    ],
    # POLLHUP from the front-end, queues stopped, loop exit, then fv_panic (exit 1).
    "VC02": [
        (6, "VirtiofsdClientDisconnected", {"time": "2020-10-05T20:15:53Z"}),
        (7, "VirtiofsdPanicked", {"error_kind": "BrokenPipe", "errno": 32, "implementation": "c"}),
    ],
    "VC03": [],
    "VC04": [],
    "VR02": [
        (
            4,
            "VirtiofsdExited",
            {"name": "virtiofsd-ro-store", "status": 1, "reporter": "supervisord"},
        )
    ],
    "VR03": [
        (1, "VirtiofsdListening", {"implementation": "rust"}),
        (2, "VirtiofsdClientConnected", {"time": "2024-12-23T04:50:26Z"}),
        (
            3,
            "VirtiofsdDaemonFailed",
            {"chain": ["HandleRequest", "InvalidMessage"], "level": "ERROR"},
        ),
    ],
    "VR05": [
        (2, "VirtiofsdListening", {"pid": 10356}),
        (3, "VirtiofsdClientConnected", {}),
        (4, "VirtiofsdDaemonFailed", {"error_kind": "NotSeekable", "errno": 29}),
    ],
    "VR07": [
        (1, "VirtiofsdListening", {}),
        (2, "VirtiofsdClientConnected", {}),
        (3, "VirtiofsdDaemonFailed", {"chain": ["HandleRequest", "InvalidParam"]}),
    ],
    "VR08": [
        (2, "VirtiofsdListening", {"time": "2024-07-18T12:53:55Z"}),
        (3, "VirtiofsdClientConnected", {"time": "2024-07-18T12:57:08Z"}),
        (4, "VirtiofsdDaemonFailed", {}),
    ],
    "VR09": [],
}


def _flat(event_dict: dict[str, Any]) -> dict[str, Any]:
    """Envelope, origin and kind fields in one namespace for the comparison."""
    return {**event_dict, **event_dict["origin"], **event_dict["fields"]}


def test_every_excerpt_has_an_expectation() -> None:
    assert {e.id for e in EXCERPTS} == set(EXPECTED)


@pytest.mark.parametrize("excerpt", EXCERPTS, ids=lambda e: e.id)
def test_excerpt_reads_as_expected(excerpt: Excerpt) -> None:
    """Kinds and lines in order, and each listed field has the expected value."""
    events = [_flat(to_dict(e)) for e in parse_excerpt(excerpt)]
    expected = sorted(EXPECTED[excerpt.id])
    assert [(e["line"], e["kind"]) for e in events] == [(n, k) for n, k, _ in expected]
    for event, (_line, _kind, fields) in zip(events, expected, strict=True):
        assert {name: event[name] for name in fields} == fields
