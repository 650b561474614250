"""What cloud-hypervisor writes, by version: FsConfig forms, error answers, log lines.

Pure text, no I/O. The stand-in (:mod:`healer.sim.cloud_hypervisor`) speaks through it,
and tests use it to know what a given version says. Sources: ch-api.md §2-§5 and
log-formats.md §1 and §3. Texts that ch-api.md marks *(derived)* (read from code,
never seen in a log) are used as given there. Source locations are those of v28.0
(for versions before the v49 logger) and of v53.0 (from v49).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import orjson

__all__ = [
    "ApiFail",
    "FsConfig",
    "backend_fail",
    "bad_request",
    "config_clash",
    "fatal_exit",
    "io_error_debug",
    "log_line",
    "parse_version",
    "request_event",
    "rs",
    "rust_duration",
    "tree_clash",
    "unknown_device",
    "worker_failed",
]

_VU = "virtio-devices/src/vhost_user/"
_WHERE = {
    "api": ("vmm/src/lib.rs:1752", "vmm/src/api/mod.rs:914"),
    "creating": ("vmm/src/device_manager.rs:2455", "vmm/src/device_manager.rs:3266"),
    "timeout": (f"{_VU}vu_common_ctrl.rs:410", f"{_VU}vu_common_ctrl.rs:462"),
    "disconnected": (f"{_VU}mod.rs:393", f"{_VU}mod.rs:393"),
    "reconnect": (f"{_VU}mod.rs:265", f"{_VU}mod.rs:265"),
    "reset": ("vmm/src/lib.rs:1730", "vmm/src/lib.rs:2089"),
    "vm_exit": ("vmm/src/lib.rs:1722", "vmm/src/lib.rs:1722"),
    "add_failed": ("vmm/src/lib.rs:974", "vmm/src/lib.rs:2779"),
    "remove_failed": ("vmm/src/lib.rs:926", "vmm/src/lib.rs:2718"),
    "eject": ("vmm/src/device_manager.rs:3758", "vmm/src/device_manager.rs:5091"),
    "http_error": ("vmm/src/api/http/mod.rs:107", "vmm/src/api/http/mod.rs:107"),
    "worker": ("virtio-devices/src/thread_helper.rs:55", "virtio-devices/src/lib.rs:88"),
}
_IO_KINDS = {
    2: "NotFound",
    13: "PermissionDenied",
    104: "ConnectionReset",
    111: "ConnectionRefused",
}
_CONNECT = "DeviceManager(CreateVirtioFs(VhostUserConnect))"
_CONNECT_CHAIN = (
    "Error from device manager",
    "Cannot create virtio-fs device",
    "Connection to socket failed",
)
_RECONNECT = (
    "failed to reconnect vhost-user backend: IoError(Custom { kind: Other, "
    'error: "failed connecting vhost-user backend VhostUserConnect" })'
)


def parse_version(text: str) -> int:
    """``"v53"``, ``"53"`` or ``"v53.0"`` -> 53."""
    m = re.fullmatch(r"v?(\d+)(?:\.\d+)*", text.strip())
    if m is None:
        msg = f"not a cloud-hypervisor version: {text!r} (write e.g. v53)"
        raise ValueError(msg)
    return int(m.group(1))


def rs(text: str) -> str:
    """A string as Rust's Debug prints it."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rust_duration(ns: int, precision: int | None = None) -> str:
    """``std::time::Duration`` Debug: ``81.565705ms``, ``10.301501007s``, ``186µs``."""
    units = (("s", 10**9), ("ms", 10**6), ("µs", 10**3), ("ns", 1))
    unit, scale = next((u, s) for u, s in units if ns >= s or s == 1)
    if precision is not None:
        return f"{ns / scale:.{precision}f}{unit}"
    whole, frac = divmod(ns, scale)
    digits = f"{frac:0{len(str(scale)) - 1}d}".rstrip("0") if scale > 1 else ""
    return f"{whole}.{digits}{unit}" if digits else f"{whole}{unit}"


def log_line(
    version: int, elapsed_s: float, *, level: str, thread: str, where: str, msg: str
) -> str:
    """One logger record, line ending included; ``where`` is a key of the location table."""
    location = _WHERE[where][version >= 49]
    if version >= 49:
        stamp = f"{elapsed_s:10.6f}s"
    else:
        stamp = rust_duration(int(elapsed_s * 1e9), 6 if version >= 29 else None)
    end = "\r\n" if version >= 33 else "\n"
    return f"cloud-hypervisor: {stamp}: <{thread}> {level}:{location} -- {msg}{end}"


@dataclass(frozen=True, slots=True)
class FsConfig:
    """One virtio-fs device as CH's ``FsConfig`` holds it (``device_id`` is ``id``)."""

    tag: str
    socket: str
    num_queues: int = 1
    queue_size: int = 1024
    device_id: str | None = None
    pci_segment: int = 0

    @classmethod
    def from_json(cls, data: Any) -> FsConfig:
        """Deserialise as serde does: unknown fields ignored, defaults filled in."""
        if not isinstance(data, dict):
            raise ValueError("invalid type: expected struct FsConfig")
        for key in ("tag", "socket"):
            if not isinstance(data.get(key), str):
                msg = f"missing field `{key}`" if key not in data else f"invalid type for `{key}`"
                raise ValueError(msg)
        numbers = {}
        for key, default in (("num_queues", 1), ("queue_size", 1024), ("pci_segment", 0)):
            value = data.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                msg = f"invalid value for `{key}`: {value!r}"
                raise ValueError(msg)
            numbers[key] = value
        device_id = data.get("id")
        if device_id is not None and not isinstance(device_id, str):
            raise ValueError("invalid type for `id`")
        return cls(data["tag"], data["socket"], device_id=device_id, **numbers)

    @classmethod
    def from_option(cls, option: str) -> FsConfig:
        """The ``--fs``/``add-fs`` syntax: ``tag=…,socket=…[,num_queues=…][,id=…]``."""
        fields: dict[str, Any] = dict(p.split("=", 1) for p in option.split(",") if "=" in p)
        for key in ("num_queues", "queue_size", "pci_segment"):
            if key in fields:
                fields[key] = int(fields[key])
        return cls.from_json(fields)

    def to_json(self, version: int) -> dict[str, Any]:
        """The entry of ``vm.info``'s ``config.fs`` in this version."""
        data: dict[str, Any] = {
            "tag": self.tag,
            "socket": self.socket,
            "num_queues": self.num_queues,
            "queue_size": self.queue_size,
            "id": self.device_id,
        }
        if version >= 22:
            data["pci_segment"] = self.pci_segment
        if version >= 52:
            data |= {"pci_device_id": None, "iommu": False}
        return data

    def debug(self, version: int) -> str:
        """The Rust Debug form (``Creating virtio-fs device: …``); v52 nests the id."""
        ident = f"Some({rs(self.device_id)})" if self.device_id else "None"
        common = f"num_queues: {self.num_queues}, queue_size: {self.queue_size}"
        paths = f"tag: {rs(self.tag)}, socket: {rs(self.socket)}"
        if version >= 52:
            pci = (
                f"PciDeviceCommonConfig {{ id: {ident}, pci_segment: {self.pci_segment}, "
                "pci_device_id: None, iommu: false }"
            )
            return f"FsConfig {{ pci_common: {pci}, {paths}, {common} }}"
        segment = f", pci_segment: {self.pci_segment}" if version >= 22 else ""
        return f"FsConfig {{ {paths}, {common}, id: {ident}{segment} }}"


@dataclass(frozen=True, slots=True)
class ApiFail:
    """One error answer in its three body shapes; ``vm`` is the VmError Debug text."""

    debug: str
    display: str
    chain: tuple[str, ...]
    vm: str = ""
    old_status: int = 500
    new_status: int = 500

    def status(self, version: int) -> int:
        """Every API error was 500 before v53 (d59585674)."""
        return self.new_status if version >= 53 else self.old_status

    def body(self, version: int) -> bytes:
        """Debug up to v37, Display v38-v46, a JSON list of the chain from v47."""
        if version < 38:
            return self.debug.encode()
        if version < 47:
            return self.display.encode()
        return orjson.dumps(list(self.chain))


def _api(request: str, action: str, vm: str, display: str, tail: tuple[str, ...]) -> ApiFail:
    chain = ("Error from API", action, *tail)
    return ApiFail(f"ApiError({request}({vm}))", display, chain, vm)


def bad_request(kind: str, detail: str = "") -> ApiFail:
    """HTTP-level errors: BadRequest, NotFound, SerdeJsonDeserialize, InternalServerError."""
    if kind == "SerdeJsonDeserialize":
        text = "Failed to deserialize JSON"
        return ApiFail(
            f"SerdeJsonDeserialize(Error({rs(detail)}))", text, (text, detail), "", 400, 400
        )
    text, status = {"NotFound": ("Not Found", 404), "BadRequest": ("Bad Request", 400)}.get(
        kind, ("Internal Server Error", 500)
    )
    return ApiFail(kind, text, (text,), "", status, status)


def backend_fail(request: str, action: str) -> ApiFail:
    """The device could not connect to its vhost-user socket (500 in every version)."""
    display = "Error from device manager: CreateVirtioFs(VhostUserConnect)"
    return _api(request, action, _CONNECT, display, _CONNECT_CHAIN)


def tree_clash(device_id: str) -> ApiFail:
    """The id is still in ``device_tree`` (removed, not ejected): 500 even in v53."""
    vm = f"DeviceManager(IdentifierNotUnique({rs(device_id)}))"
    display = f"Error from device manager: IdentifierNotUnique({rs(device_id)})"
    tail = ("Error from device manager", f"Invalid identifier as it is not unique: {device_id}")
    return _api("VmAddFs", "The fs could not be added to the VM", vm, display, tail)


def config_clash(device_id: str) -> ApiFail:
    """The id is already in ``VmConfig``: 409 from v53."""
    vm = f"ConfigValidation(IdentifierNotUnique({rs(device_id)}))"
    display = f"Failed to validate config: Identifier {device_id} is not unique"
    tail = ("Failed to validate config", f"Identifier {device_id} is not unique")
    fail = _api("VmAddFs", "The fs could not be added to the VM", vm, display, tail)
    return ApiFail(fail.debug, fail.display, fail.chain, fail.vm, 500, 409)


def unknown_device(device_id: str) -> ApiFail:
    """remove-device of an id CH does not know: 404 from v53."""
    vm = f"DeviceManager(UnknownDeviceId({rs(device_id)}))"
    display = f"Error from device manager: UnknownDeviceId({rs(device_id)})"
    tail = (
        "Error from device manager",
        "Failed to find device corresponding to the given identifier",
    )
    fail = _api("VmRemoveDevice", "The device could not be removed from the VM", vm, display, tail)
    return ApiFail(fail.debug, fail.display, fail.chain, fail.vm, 500, 404)


def request_event(kind: str, detail: object, version: int) -> str:
    """``API request event: …``: the ApiRequest Debug (with its Sender) before v38."""
    if isinstance(detail, FsConfig):
        shown = detail.debug(version)
    elif isinstance(detail, str):
        shown = f"VmRemoveDeviceData {{ id: {rs(detail)} }}"
    else:
        shown = ""
    if version < 38:
        return f"API request event: {kind}({shown + ', ' if shown else ''}Sender {{ .. }})"
    return f"API request event: {kind}{' ' + shown if shown else ''}"


def io_error_debug(exc: BaseException) -> str:
    """The vhost error Debug CH prints when its connect loop gives up."""
    errno = getattr(exc, "errno", None)
    if isinstance(errno, int) and errno:
        kind = _IO_KINDS.get(errno, "Uncategorized")
        os_error = f"Os {{ code: {errno}, kind: {kind}, message: {rs(os.strerror(errno))} }}"
        return f"VhostUserProtocol(SocketConnect({os_error}))"
    return "VhostUserProtocol(PartialMessage)"


def worker_failed(device_id: str, version: int) -> tuple[str, str, str]:
    """Level, location key and message when a reconnect window runs out."""
    if version >= 52:
        context = f"{device_id}: worker exited with error: HandleEvent({_RECONNECT})"
        text = (
            f"Corrupted request detected ({context}). Setting device status to "
            "'NEEDS_RESET' and stopping processing queues until reset."
        )
        return "WARN", "worker", text
    if version >= 26:
        return "ERROR", "worker", f"Error running worker: HandleEvent({_RECONNECT})"
    return "ERROR", "reconnect", _RECONNECT


def fatal_exit(version: int, *, boot: bool) -> str:
    """What the process prints on stderr when a boot or guest reboot cannot connect."""
    what, request = ("Error booting VM", "VmBoot") if boot else ("Error rebooting VM", "VmReboot")
    if version < 48:
        if boot:
            return f"{what}: {request}({_CONNECT})\n"
        return f"VMM thread exited with error: {what}: {_CONNECT}\n"
    levels = [f"  {n}: {m}" for n, m in enumerate((what, *_CONNECT_CHAIN))]
    head = "Error: Cloud Hypervisor exited with the following chain of errors:"
    return "\n".join((head, *levels, "", f"Debug Info: {request}({_CONNECT})", ""))
