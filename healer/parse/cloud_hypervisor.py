"""cloud-hypervisor: logger lines of every era, fatal error chains, event monitor.

Logger formats (see the format table in docs/events.md): ``cloud-hypervisor: <uptime>: [<thread>]
LEVEL:location -- msg`` where uptime is a Rust ``Duration`` (``81.565705ms``,
``10.301501007s``) up to v48 and right-aligned seconds from v49; the thread is absent
before v0.13 and in pipelines that strip it; lines end in ``\\r\\n`` from v33.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from healer.events import (
    AddFsFailed,
    ApiError,
    ApiRequest,
    BackendConnectFailed,
    BackendConnectTimeout,
    BackendDisconnected,
    BackendReconnectFailed,
    DeviceNeedsReset,
    DeviceRemoved,
    DeviceRemoveFailed,
    DeviceWorkerStopped,
    FsDeviceCreating,
    VmmExited,
    VmmLifecycle,
    VmRebootFailed,
    VmReset,
)
from healer.eventtime import duration_seconds
from healer.parse.patterns import Built, Pattern, error_fields
from healer.parse.record import Record

__all__ = [
    "KEYWORDS",
    "PATTERNS",
    "PROGRAM",
    "match_logger",
    "match_trimmed",
    "parse_event_monitor",
]

LOGGER = re.compile(
    r"cloud-hypervisor:\s+(\d+(?:\.\d+)?)(ns|µs|us|ms|s):\s+(?:<([^>]*)>\s+)?"
    r"(ERROR|WARN|INFO|DEBUG|TRACE):(\S+?)(?::(\d+))?(?: --(?: (.*))?|\s*$)"
)

_TRIMMED = re.compile(r"(\d+\.\d+)(ns|µs|us|ms|s) <([^<>\s]{1,128})>\s+(\S.*)")

PROGRAM: str | None = "cloud-hypervisor"
"""Who prints the messages below when the line itself does not say."""

# Literal needles for the prefilter: every pattern below matches only text that
# contains one of them (the golden tests check this on every corpus excerpt). They are
# the patterns' own distinctive phrases, not words like "Error" or "vhost-user": a
# verbose VMM names those on every other line, and each line a needle lets through
# costs a full parse.
KEYWORDS = (
    "Failed connecting",
    "Timed out waiting for vhost-user",
    "attempting reconnection",
    "NEEDS_RESET",
    "failed to reconnect vhost-user",
    "Error when adding new fs",
    "Error when removing",
    "Creating virtio-fs device",
    "VM reset event",
    "VmExit::Reset",
    " signalled",
    "CMOS reset",
    "Error rebooting VM",
    "VMM thread",
    "chain of errors",
    "Error booting VM",
    "Guest boot failed",
    "Fatal error: ",
    "VM exit event",
    "Ejecting device_id",
    "API request event",
    "HTTP API error response",
    "KILL_EVENT received",
    "Event: source = ",
)


def match_logger(rec: Record) -> bool:
    """Read a cloud-hypervisor logger prefix from the payload into ``rec``."""
    m = LOGGER.search(rec.payload)
    if m is None:
        return False
    value, unit, thread, level, location, line_no, msg = m.groups()
    rec.program = "cloud-hypervisor"
    rec.uptime = duration_seconds(value, unit)
    rec.domain = "ch"
    rec.thread = thread
    rec.level = level
    rec.location = f"{location}:{line_no}" if line_no else location
    message = msg or ""
    if rec.wall is None or "kata" in rec.head[:40]:
        message = message.removesuffix('"')
    rec.message = message.rstrip()
    rec.continuation = [strip_logger(c) for c in rec.continuation]
    return True


def match_trimmed(rec: Record) -> bool:
    """The logger's line with its ``cloud-hypervisor:`` and ``LEVEL:location --`` cut
    by a reporter: ``1305.733s <volume/boot> message``; the thread still names the
    device."""
    m = _TRIMMED.match(rec.payload)
    if m is None:
        return False
    value, unit, thread, message = m.groups()
    rec.program = "cloud-hypervisor"
    rec.uptime = duration_seconds(value, unit)
    rec.domain = "ch"
    rec.thread = thread
    rec.message = message.rstrip()
    return True


def strip_logger(text: str) -> str:
    """A continuation that is itself a logger line (v47 chains) keeps only its message."""
    m = LOGGER.search(text)
    return (m.group(7) or "").strip() if m else text


def _path(text: str | None) -> str | None:
    """A socket path as the line gives it; a reporter's ``...`` in its place is none."""
    return None if text is None or not text.strip(".…") else text


def _socket_error(cls: type, rec: Record, m: re.Match[str]) -> Built:
    return cls, {"socket": _path(m.group("socket")), **error_fields(m.group("err") or "")}


def _timeout(rec: Record, m: re.Match[str]) -> Built:
    return _socket_error(BackendConnectTimeout, rec, m)


def _connect_failed(rec: Record, m: re.Match[str]) -> Built:
    return _socket_error(BackendConnectFailed, rec, m)


def _disconnected(rec: Record, m: re.Match[str]) -> Built:
    return BackendDisconnected, {"socket": _path(m.group(1)), "device_id": _device(rec)}


def _reconnect_failed(rec: Record, m: re.Match[str]) -> Built:
    return BackendReconnectFailed, {"device_id": _device(rec), **error_fields(m.group(1))}


def _needs_reset(rec: Record, m: re.Match[str]) -> Built:
    context = m.group(1)
    device = context.split(":", 1)[0] if ": worker exited" in context else _device(rec)
    return DeviceNeedsReset, {"device_id": device, **error_fields(context)}


def _add_fs_failed(rec: Record, m: re.Match[str]) -> Built:
    return AddFsFailed, error_fields(m.group(1))


def _remove_failed(rec: Record, m: re.Match[str]) -> Built:
    return DeviceRemoveFailed, error_fields(m.group(1))


_FS_FIELD = re.compile(r'\b(tag|socket|id): (?:Some\()?"((?:[^"\\]|\\.)*)"')
_FS_NUMBER = re.compile(r"\b(num_queues|queue_size): (\d+)")


def _fs_creating(rec: Record, m: re.Match[str]) -> Built:
    config = m.group(1)
    text = dict(_FS_FIELD.findall(config))
    numbers = {k: int(v) for k, v in _FS_NUMBER.findall(config)}
    return FsDeviceCreating, {
        "tag": text.get("tag"),
        "socket": text.get("socket"),
        "device_id": text.get("id"),
        "num_queues": numbers.get("num_queues"),
        "queue_size": numbers.get("queue_size"),
    }


def _reset(rec: Record, m: re.Match[str]) -> Built:
    return VmReset, {"trigger": m.group(0)}


def _reboot_failed(rec: Record, m: re.Match[str]) -> Built:
    message = rec.full_message()
    exited = message.startswith(("VMM thread exited", "VMM thread failed"))
    return VmRebootFailed, {"vmm_exited": exited, **error_fields(m.group(1))}


def _vmm_thread(rec: Record, m: re.Match[str]) -> Built:
    text = m.group(2)
    if "VmReboot(" in text:
        return VmRebootFailed, {"vmm_exited": True, **error_fields(text)}
    return VmmExited, {"reason": text.split(":", 1)[0][:200], **error_fields(text)}


_CAUSE = re.compile(r"^\s*(?:\d+|X): (.*)$")


def _chain_of_errors(rec: Record, m: re.Match[str]) -> Built:
    if m.group(1) != "Cloud Hypervisor":
        return None
    causes = tuple(c.group(1) for c in map(_CAUSE.match, rec.continuation) if c)
    debug = next((c[len("Debug Info: ") :] for c in rec.continuation if c.startswith("Debug")), "")
    return VmmExited, {
        "reason": causes[0] if causes else "exited with a chain of errors",
        "causes": causes,
        **error_fields(debug),
    }


def _fatal(rec: Record, m: re.Match[str]) -> Built:
    return VmmExited, {"reason": m.group(1), **error_fields(m.group(2))}


def _fatal_debug(rec: Record, m: re.Match[str]) -> Built:
    return VmmExited, {"reason": "Fatal error", **error_fields(m.group(1))}


def _vm_exit(rec: Record, m: re.Match[str]) -> Built:
    return VmmExited, {"reason": "VM exit event"}


def _ejecting(rec: Record, m: re.Match[str]) -> Built:
    return DeviceRemoved, {"device_id": m.group(1)}


def _api_request(rec: Record, m: re.Match[str]) -> Built:
    return ApiRequest, {"request": m.group(1), "detail": m.group(2).strip()[:500]}


def _api_error_logged(rec: Record, m: re.Match[str]) -> Built:
    return ApiError, {"messages": (m.group(1),), **error_fields(m.group(1))}


def _worker_stopped(rec: Record, m: re.Match[str]) -> Built:
    device = _device(rec)
    return (DeviceWorkerStopped, {"device_id": device}) if device else None


def _monitor_line(rec: Record, m: re.Match[str]) -> Built:
    properties = dict(re.findall(r"(\w+) = (\S+)", m.group(3)))
    return monitor_event(m.group(1), m.group(2), properties)


def monitor_event(source: str, event: str, properties: dict[str, str]) -> Built:
    """Map an event-monitor event to a kind; the rest become VmmLifecycle."""
    if (source, event) in (("vm", "rebooting"), ("vm", "reset")):
        return VmReset, {"trigger": f"{source}/{event}"}
    if (source, event) == ("vm", "device-removed"):
        return DeviceRemoved, {"device_id": properties.get("id"), "bdf": properties.get("bdf")}
    return VmmLifecycle, {"event_source": source, "event": event, "properties": properties}


_VMM_THREADS = re.compile(
    r"^(?:vmm|main|anonymous|http-server|serial-manager|payload_loader|signal_handler"
    r"|event-monitor|dbus-api|vcpu\d+)$"
)


def _device(rec: Record) -> str | None:
    """Worker threads are named after their device id (``_fs2``, or a user's ``myfs0``)."""
    thread = rec.thread
    return thread if thread and not _VMM_THREADS.match(thread) else None


PATTERNS: list[Pattern] = [
    (
        re.compile(
            r"Failed connecting the backend after trying for 1 minute"
            r"(?: for socket (?P<socket>\S+?))?:\s*(?P<err>.*)"
        ),
        _timeout,
    ),
    (
        re.compile(
            r"Timed out waiting for vhost-user connection on socket (?P<socket>\S+)(?P<err>)"
        ),
        _timeout,
    ),
    (
        re.compile(
            r"Failed connecting to vhost-user backend for socket (?P<socket>\S+?): (?P<err>.*)"
        ),
        _connect_failed,
    ),
    (
        re.compile(r"vhost-user backend for socket (\S+) disconnected, attempting reconnection"),
        _disconnected,
    ),
    (
        # the detail is bounded (4 KiB): an unbounded .* rescans the rest of the line
        # from every repetition of the prefix, which is quadratic
        re.compile(
            r"Corrupted request detected \((.{0,4096})\)\. Setting device status to 'NEEDS_RESET'"
        ),
        _needs_reset,
    ),
    (re.compile(r"failed to reconnect vhost-user backend: (.*)"), _reconnect_failed),
    (re.compile(r"Error when adding new fs to the VM: (.*)"), _add_fs_failed),
    (re.compile(r"Error when removing (?:new )?device (?:to|from) the VM: (.*)"), _remove_failed),
    (re.compile(r"Creating virtio-fs device: (FsConfig.*)"), _fs_creating),
    (
        re.compile(
            r"VM reset event|VmExit::Reset|ACPI Reboot signalled|i8042 reset signalled|CMOS reset"
        ),
        _reset,
    ),
    (re.compile(r"Error rebooting VM: (.*)"), _reboot_failed),
    (re.compile(r"^(VMM thread failed|VMM thread exited with error:) ?(.*)"), _vmm_thread),
    (
        re.compile(
            r"^Error: (Cloud Hypervisor|ch-remote) exited with the following chain of errors"
        ),
        _chain_of_errors,
    ),
    (re.compile(r"^(Error booting VM|Guest boot failed): (.*)"), _fatal),
    (re.compile(r"^Fatal error: (.*)"), _fatal_debug),
    (re.compile(r"^VM exit event"), _vm_exit),
    (re.compile(r"Ejecting device_id = (\S+) on segment_id"), _ejecting),
    (re.compile(r"API request event: (\w+)(.*)"), _api_request),
    (re.compile(r"HTTP API error response: (.*)"), _api_error_logged),
    (re.compile(r"KILL_EVENT received, stopping epoll loop"), _worker_stopped),
    (re.compile(r"Event: source = (\S+) event = (\S+)(.*)"), _monitor_line),
]


_SCALARS = (str, int, float, bool)


def parse_event_monitor(text: str) -> tuple[Built, float | None, str]:
    """One pretty-printed ``--event-monitor`` JSON object: event, uptime, label."""
    try:
        obj: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None, None, ""
    if not isinstance(obj, dict):
        return None, None, ""
    source, event = obj.get("source"), obj.get("event")
    if not isinstance(source, str) or not isinstance(event, str):
        return None, None, ""
    stamp = obj.get("timestamp")
    uptime = None
    if isinstance(stamp, dict):
        secs, nanos = stamp.get("secs"), stamp.get("nanos", 0)
        if isinstance(secs, int) and isinstance(nanos, int):
            uptime = secs + nanos / 1e9
    props = obj.get("properties")
    # CH writes a flat map of strings; a nested value (of any depth: str() of one nested
    # a thousand deep raises RecursionError) is not a property.
    properties = (
        {str(k): str(v) for k, v in props.items() if isinstance(v, _SCALARS)}
        if isinstance(props, dict)
        else {}
    )
    return monitor_event(source, event, properties), uptime, f"{source}/{event}"
