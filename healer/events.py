"""The typed event stream: immutable facts read from logs, one class per kind.

Every event has the same envelope (kind, time, source, offset, line, share, level,
origin, message, raw) and typed kind-specific fields. Kind names are the class names
and are part of the public contract: rules, journals and dashboards refer to them.
``to_dict``/``from_dict`` give a lossless JSON form (``orjson``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, TypeVar

import orjson

__all__ = [
    "KINDS",
    "AddFsFailed",
    "ApiError",
    "ApiRequest",
    "ApiUnreachable",
    "BackendConnectFailed",
    "BackendConnectTimeout",
    "BackendDisconnected",
    "BackendReconnectFailed",
    "DeviceAdded",
    "DeviceNeedsReset",
    "DeviceRemoveFailed",
    "DeviceRemoved",
    "DeviceWorkerStopped",
    "ErrorEvent",
    "Event",
    "FsDeviceCreating",
    "GuestMountFailed",
    "GuestReboot",
    "GuestTagNotFound",
    "Origin",
    "VirtiofsdChildTerminated",
    "VirtiofsdClientConnected",
    "VirtiofsdClientDisconnected",
    "VirtiofsdDaemonFailed",
    "VirtiofsdExited",
    "VirtiofsdListening",
    "VirtiofsdPanicked",
    "VirtiofsdStartFailed",
    "VirtiofsdStarted",
    "VmRebootFailed",
    "VmReset",
    "VmmExited",
    "VmmLifecycle",
    "event_from_json",
    "event_to_json",
    "from_dict",
    "to_dict",
]

LEVELS = ("ERROR", "WARN", "INFO", "DEBUG", "TRACE")

KINDS: dict[str, type[Event]] = {}
"""Every event kind by name, in declaration order."""

_E = TypeVar("_E", bound="type[Event]")


def _kind(cls: _E) -> _E:
    """Register an event class; its class name is its kind name."""
    cls.kind = cls.__name__
    KINDS[cls.kind] = cls
    return cls


@dataclass(frozen=True, slots=True, kw_only=True)
class Origin:
    """Who wrote the record: program, pid, thread, source location, uptime clock.

    ``generation`` is healer's number for the virtiofsd instance that wrote it (live
    only): a pid can be reused, a generation never is. ``guest`` says the guest wrote
    the text (a Kata ``vmconsole`` record, a source configured ``trust = "guest"``):
    it may ask for nothing on the host by itself (docs/trust.md).
    """

    program: str | None = None
    pid: int | None = None
    thread: str | None = None
    location: str | None = None
    uptime: float | None = None
    generation: int | None = None
    guest: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Common envelope. ``offset`` and ``line`` point at the record's first line."""

    kind: ClassVar[str] = "Event"
    default_level: ClassVar[str] = "INFO"

    time: datetime | None
    source: str
    offset: int
    line: int
    share: str | None = None
    level: str = "INFO"
    origin: Origin = field(default_factory=Origin)
    message: str = ""
    raw: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorEvent(Event):
    """An event whose message carries a Rust Debug error, read into fields."""

    default_level: ClassVar[str] = "ERROR"

    chain: tuple[str, ...] = ()
    error_kind: str | None = None
    errno: int | None = None


# --- cloud-hypervisor ---------------------------------------------------------------


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class FsDeviceCreating(Event):
    """CH creates a virtio-fs device (boot, reboot, hotplug) from this FsConfig."""

    tag: str | None = None
    socket: str | None = None
    device_id: str | None = None
    num_queues: int | None = None
    queue_size: int | None = None


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class BackendConnectTimeout(ErrorEvent):
    """CH retried connecting to the vhost-user socket for 60 s and gave up."""

    socket: str | None = None


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class BackendConnectFailed(ErrorEvent):
    """CH hit a connect error it does not retry (not ENOENT/ECONNREFUSED/EINTR)."""

    socket: str | None = None


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class BackendDisconnected(Event):
    """v52+: the backend went away under an active device; CH reconnects for 60 s.
    ``device_id`` is the device whose worker thread said it (its thread's name)."""

    socket: str | None = None
    device_id: str | None = None


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class BackendReconnectFailed(ErrorEvent):
    """The device worker could not reconnect; v26-v51 then shut the whole VMM down."""

    device_id: str | None = None


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceNeedsReset(ErrorEvent):
    """v52+: the device is latched NEEDS_RESET; heal with remove-device + add-fs."""

    default_level: ClassVar[str] = "WARN"
    device_id: str | None = None


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class AddFsFailed(ErrorEvent):
    """Adding an fs device failed, usually after the 60 s connect loop."""


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class VmReset(Event):
    """The guest or the API reset the VM; virtiofsd loses its client now."""

    trigger: str = ""


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class VmRebootFailed(ErrorEvent):
    """A VM reboot failed; ``vmm_exited`` when the VMM thread ended with it."""

    vmm_exited: bool = False


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class VmmExited(ErrorEvent):
    """The cloud-hypervisor process ended; ``causes`` is its printed error chain."""

    reason: str = ""
    causes: tuple[str, ...] = ()


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class VmmLifecycle(Event):
    """An event-monitor event without a kind of its own (vm/booted, activated, ...)."""

    event_source: str = ""
    event: str = ""
    properties: dict[str, str] = field(default_factory=dict)


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRemoved(Event):
    """The device is really gone (ACPI eject done); its id may be reused now."""

    device_id: str | None = None
    bdf: str | None = None


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceRemoveFailed(ErrorEvent):
    """``vm.remove-device`` failed."""


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceAdded(Event):
    """ch-remote printed the new device: ``{"id":"_fs8","bdf":"0000:00:0a.0"}``."""

    device_id: str | None = None
    bdf: str | None = None


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceWorkerStopped(Event):
    """A device worker thread stopped its epoll loop (reboot, shutdown, removal)."""

    device_id: str | None = None


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class ApiRequest(Event):
    """CH received an API request (VmReboot, VmAddFs, VmRemoveDevice, VmInfo, ...)."""

    request: str = ""
    detail: str = ""


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class ApiUnreachable(ErrorEvent):
    """ch-remote could not reach the API socket: the VMM is gone or not listening."""


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class ApiError(ErrorEvent):
    """The API answered with an error status; ``messages`` are the body's items."""

    status: str | None = None
    messages: tuple[str, ...] = ()


# --- virtiofsd (Rust and C) ---------------------------------------------------------


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class VirtiofsdListening(Event):
    """The socket is bound and listening; safe to (re)issue add-fs, boot, reboot."""

    implementation: str | None = None


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class VirtiofsdClientConnected(Event):
    """The VMM connected; virtiofsd accepts exactly one client."""

    implementation: str | None = None


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class VirtiofsdClientDisconnected(Event):
    """The VMM closed the socket; virtiofsd now exits with status 0."""

    implementation: str | None = None


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class VirtiofsdDaemonFailed(ErrorEvent):
    """A protocol error ended the daemon ("Waiting for daemon failed"); exit 0."""


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class VirtiofsdPanicked(ErrorEvent):
    """A Rust panic (exit 101) or the C daemon's fv_panic (exit 1)."""

    thread: str | None = None
    location: str | None = None
    implementation: str | None = None


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class VirtiofsdExited(Event):
    """A supervisor saw the virtiofsd process end (supervisord, systemd, kata, loop)."""

    default_level: ClassVar[str] = "WARN"
    name: str | None = None
    status: int | None = None
    signal: str | None = None
    expected: bool | None = None
    reporter: str | None = None


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class VirtiofsdStartFailed(ErrorEvent):
    """virtiofsd could not start: pid file lock, bind, missing shared dir, sandbox."""

    path: str | None = None


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class VirtiofsdStarted(Event):
    """healer started (or, after its own restart, adopted) a virtiofsd for the share.

    Reported by healer itself, with the daemon's pid and healer's generation number
    in ``origin``: from here on, lines and exits of older generations speak only
    for their own daemon. ``adopted``: found running, not started now; ``served``:
    a client was connected to it when it was found.
    """

    adopted: bool = False
    served: bool = False


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class VirtiofsdChildTerminated(Event):
    """The Rust daemon's sandbox child was killed; the outer process exits 247 next.

    With ``--sandbox namespace`` the Rust virtiofsd forks at start and the child
    serves; the outer says "Child process terminated by signal N" when it dies.
    ``signal`` is the name (``SIGKILL``), ``signo`` the number.
    """

    default_level: ClassVar[str] = "ERROR"
    signal: str | None = None
    signo: int | None = None


# --- guest --------------------------------------------------------------------------


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class GuestTagNotFound(ErrorEvent):
    """The guest kernel knows no virtio-fs device with this tag (yet, or any more)."""

    tag: str | None = None


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class GuestMountFailed(ErrorEvent):
    """mount(8) in the guest failed for the share."""

    mountpoint: str | None = None
    tag: str | None = None
    reason: str = ""


@_kind
@dataclass(frozen=True, slots=True, kw_only=True)
class GuestReboot(Event):
    """The guest kernel is restarting or powering off."""

    action: str = ""


_ENVELOPE = frozenset(f.name for f in dataclasses.fields(Event))
_OWN_FIELDS: dict[type[Event], tuple[dataclasses.Field[Any], ...]] = {
    cls: tuple(f for f in dataclasses.fields(cls) if f.name not in _ENVELOPE)
    for cls in KINDS.values()
}


def to_dict(event: Event) -> dict[str, Any]:
    """The JSON-ready form; kind-specific fields go under ``fields``."""
    origin = event.origin
    where: dict[str, Any] = {
        "program": origin.program,
        "pid": origin.pid,
        "thread": origin.thread,
        "location": origin.location,
        "uptime": origin.uptime,
    }
    if origin.generation is not None:  # live only; replay output stays as it was
        where["generation"] = origin.generation
    if origin.guest:  # only when true: host events' output stays as it was
        where["guest"] = True
    return {
        "kind": event.kind,
        "time": event.time.isoformat().replace("+00:00", "Z") if event.time else None,
        "source": event.source,
        "offset": event.offset,
        "line": event.line,
        "share": event.share,
        "level": event.level,
        "origin": where,
        "message": event.message,
        "fields": {f.name: _plain(getattr(event, f.name)) for f in _OWN_FIELDS[type(event)]},
        "raw": event.raw,
    }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def from_dict(data: dict[str, Any]) -> Event:
    """Rebuild an event from :func:`to_dict` output; unknown kinds raise KeyError."""
    cls = KINDS[data["kind"]]
    own: dict[str, Any] = {}
    for f in _OWN_FIELDS[cls]:
        if f.name in data["fields"]:
            value = data["fields"][f.name]
            own[f.name] = tuple(value) if isinstance(value, list) else value
    time = data["time"]
    return cls(
        time=datetime.fromisoformat(time) if time else None,
        source=data["source"],
        offset=data["offset"],
        line=data["line"],
        share=data["share"],
        level=data["level"],
        origin=Origin(**data["origin"]),
        message=data["message"],
        raw=data["raw"],
        **own,
    )


def event_to_json(event: Event) -> bytes:
    """One compact JSON object, keys in a fixed order (replay output is byte-stable)."""
    return orjson.dumps(to_dict(event))


def event_from_json(data: bytes | str) -> Event:
    """Inverse of :func:`event_to_json`."""
    return from_dict(orjson.loads(data))
