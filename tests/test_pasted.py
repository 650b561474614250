"""Logs as people paste them: a whole log indented in a mail, lines re-wrapped with
shell continuations, a prompt in front. Expectations written by hand from the text."""

from __future__ import annotations

from typing import Any

from healer.events import Event
from healer.parse import SourceParser
from healer.parse.margin import learn_margin

CONNECT_TIMEOUT = (
    "2022-12-26T06:48:09.082698957Z cloud-hypervisor: 70.509301809s:  "
    "ERROR:virtio-devices/src/vhost_user/vu_common_ctrl.rs:410 -- Failed connecting the "
    "backend after trying for 1 minute: VhostUserProtocol(SocketConnect(Os { code: 111, "
    'kind: ConnectionRefused, message: "Connection refused" }))'
)


def _events(text: str) -> list[Event]:
    items = SourceParser("pasted", default_year=2024).parse_all(text.encode())
    return [i for i in items if isinstance(i, Event)]


def _fields(event: Event, *names: str) -> dict[str, Any]:
    return {name: getattr(event, name) for name in names}


def test_a_log_indented_four_spaces_in_a_mail_is_nine_records() -> None:
    log = (
        "    [2023-07-01T23:22:06Z INFO  virtiofsd] Waiting for vhost-user socket connection...\n"
        "    [2023-07-01T23:22:07Z INFO  virtiofsd] Client connected, servicing requests\n"
        "    [2023-07-01T23:25:10Z INFO  virtiofsd] Client disconnected, shutting down\n"
        "\n"
        "    [2023-07-01T23:25:11Z INFO  virtiofsd] Waiting for vhost-user socket connection...\n"
        "    [2023-07-01T23:25:12Z INFO  virtiofsd] Client connected, servicing requests\n"
        "    [2023-07-01T23:30:00Z ERROR virtiofsd] Waiting for daemon failed: "
        "HandleRequest(InvalidParam)\n"
        "    [2023-07-01T23:30:01Z INFO  virtiofsd] Waiting for vhost-user socket connection...\n"
        "    [2023-07-01T23:30:02Z INFO  virtiofsd] Client connected, servicing requests\n"
        "    [2023-07-01T23:31:00Z INFO  virtiofsd] Client disconnected, shutting down\n"
    )
    got = [(e.line, e.kind, e.time.strftime("%H:%M:%S") if e.time else None) for e in _events(log)]
    assert got == [
        (1, "VirtiofsdListening", "23:22:06"),
        (2, "VirtiofsdClientConnected", "23:22:07"),
        (3, "VirtiofsdClientDisconnected", "23:25:10"),
        (5, "VirtiofsdListening", "23:25:11"),
        (6, "VirtiofsdClientConnected", "23:25:12"),
        (7, "VirtiofsdDaemonFailed", "23:30:00"),
        (8, "VirtiofsdListening", "23:30:01"),
        (9, "VirtiofsdClientConnected", "23:30:02"),
        (10, "VirtiofsdClientDisconnected", "23:31:00"),
    ]


def test_an_indented_chain_inside_an_indented_log_still_continues_its_record() -> None:
    # ../shared/corpus CH18 (a cloud-hypervisor commit message), pasted into a mail:
    # four blanks before every line, its blank line too.
    log = (
        "    Error: Cloud Hypervisor exited with the following chain of errors:\n"
        "     0: Error booting VM\n"
        "     1: The VM could not boot\n"
        "     2: Error manipulating firmware file\n"
        "     3: No such file or directory (os error 2)\n"
        "    \n"
        "    Debug Info: VmBoot(VmBoot(FirmwareFile(Os { code: 2, kind: NotFound, "
        'message: "No such file or directory" })))\n'
    )
    (event,) = _events(log)
    assert (event.line, event.kind) == (1, "VmmExited")
    assert _fields(event, "chain", "error_kind", "errno") == {
        "chain": ("VmBoot", "VmBoot", "FirmwareFile"),
        "error_kind": "NotFound",
        "errno": 2,
    }


def test_the_byte_offset_of_an_indented_record_is_its_line_in_the_file() -> None:
    first = "    [2023-07-01T23:22:06Z INFO  virtiofsd] Client connected, servicing requests\n"
    second = "    [2023-07-01T23:25:10Z INFO  virtiofsd] Client disconnected, shutting down\n"
    events = _events(first + second)
    assert [e.offset for e in events] == [0, len(first.encode())]


def test_a_margin_is_only_what_every_line_shares() -> None:
    assert learn_margin(b"    a\n      b\n    c\n") == b"    "
    assert learn_margin(b"    a\n  b\n") == b"  "
    assert learn_margin(b" INFO warden: x\nERROR warden: y\n") == b""  # vagrant's levels
    assert learn_margin(b"a\n    b\n") == b""  # a real log's continuation line
    assert learn_margin(b"\n\n    a\n\n    b\n") == b"    "  # blank lines say nothing


def test_a_cloud_hypervisor_line_re_wrapped_keeps_its_chain_and_error_kind() -> None:
    cut = CONNECT_TIMEOUT.index(" VhostUserProtocol")
    wrapped = CONNECT_TIMEOUT[:cut] + " \\\n    " + CONNECT_TIMEOUT[cut + 1 :] + "\n"
    (event,) = _events(wrapped)
    assert event.kind == "BackendConnectTimeout"
    assert event.line == 1
    assert _fields(event, "chain", "error_kind", "errno") == {
        "chain": ("VhostUserProtocol", "SocketConnect"),
        "error_kind": "ConnectionRefused",
        "errno": 111,
    }


def test_a_keyword_cut_by_the_wrap_is_still_found() -> None:
    cut = CONNECT_TIMEOUT.index(" connecting")  # "Failed \" / "connecting the backend"
    wrapped = CONNECT_TIMEOUT[:cut] + " \\\n" + CONNECT_TIMEOUT[cut + 1 :] + "\n"
    assert [(e.line, e.kind) for e in _events(wrapped)] == [(1, "BackendConnectTimeout")]


def test_a_wrap_cut_inside_a_word_joins_without_a_blank() -> None:
    cut = CONNECT_TIMEOUT.index("Refused")  # "kind: Connection\" / "Refused, ..."
    wrapped = CONNECT_TIMEOUT[:cut] + "\\\n" + CONNECT_TIMEOUT[cut:] + "\n"
    (event,) = _events(wrapped)
    assert _fields(event, "error_kind") == {"error_kind": "ConnectionRefused"}


def test_a_line_after_a_wrapped_command_is_its_own_record() -> None:
    log = (
        "$ /usr/libexec/virtiofsd \\\n"
        "    --socket-path=/run/vfs.sock \\\n"
        "    --shared-dir /srv\n"
        "[2024-03-01T10:00:01Z INFO  virtiofsd] Waiting for vhost-user socket connection...\n"
    )
    got = [(e.line, e.kind) for e in _events(log)]
    assert got == [(4, "VirtiofsdListening")]


def test_a_prompt_before_a_line_is_not_its_text() -> None:
    (event,) = _events("$ " + CONNECT_TIMEOUT + "\n")
    assert event.kind == "BackendConnectTimeout"
    assert event.time is not None
    assert event.time.isoformat() == "2022-12-26T06:48:09.082698+00:00"


def test_a_trimmed_cloud_hypervisor_line_names_its_device_and_no_socket() -> None:
    # tests/field_corpus KC19: the reporter cut the logger's prefix and the socket path
    (event,) = _events(
        "1305.737s <volume/boot>        vhost-user backend for socket ... disconnected, "
        "attempting reconnection\n"
    )
    assert event.kind == "BackendDisconnected"
    assert _fields(event, "device_id", "socket", "share") == {
        "device_id": "volume/boot",
        "socket": None,
        "share": None,
    }
    assert event.origin.uptime == 1305.737


def test_a_v52_disconnect_names_the_device_of_its_worker_thread() -> None:
    (event,) = _events(
        "cloud-hypervisor: 40.371799s: <_fs2> INFO:virtio-devices/src/vhost_user/mod.rs:405 "
        "-- vhost-user backend for socket /run/vfs.sock disconnected, attempting reconnection\n"
    )
    assert _fields(event, "device_id", "socket", "share") == {
        "device_id": "_fs2",
        "socket": "/run/vfs.sock",
        "share": "/run/vfs.sock",
    }
