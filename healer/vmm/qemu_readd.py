"""Re-add a vhost-user-fs device through QEMU's monitor, after its virtiofsd died.

QEMU 7.2 never re-initialises a vhost-user-fs device whose backend reconnects: the
device keeps its dead connection until it is removed and added again. Measured on
this project's lab machine (TCG, Linux 6.1 guest), the working order is:

1. read the device's properties from QOM (chardev, tag, PCI address, bus, queue
   size) while it still exists, so the new one is the same device;
2. ``device_del``, then wait for ``DEVICE_DELETED`` (the guest acknowledges the ACPI
   unplug, about 0.25 s). Removing the chardev earlier fails with "is busy";
3. ``chardev-remove``;
4. wait until a virtiofsd listens on the socket (``is_ready``): ``chardev-add``
   connects at once, and ``device_add`` talks to the backend synchronously, so the
   monitor would block on a socket nobody serves;
5. ``chardev-add`` (a Unix socket client) and ``device_add vhost-user-fs-pci``.

The guest then binds the new device (about 0.3 s) and the share can be mounted again.

This works only while no guest request is in flight on the dead device: guest I/O
issued after virtiofsd died blocks in the guest, and ``device_del`` then never
completes (the guest's unplug waits for those requests). After ``device_del_timeout_s``
the sequence stops with :class:`QemuDeviceStuck` and escalates as configured:
``notify`` (default: report, touch nothing) or ``system_reset`` (opt-in: reset the
VM, the only way out; the guest's unsaved state is lost). A reset completes the
pending unplug (QEMU then reports ``DEVICE_DELETED``), so running the sequence again
adds the device back for the rebooting guest: it skips what is already gone.

Every wait is bounded; each step's duration is in the result (or the error).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from healer.vmm.qmp import QmpClient, QmpCommandError, QmpError, QmpEvent, QmpTimeout

__all__ = [
    "ON_STUCK",
    "QemuDeviceStuck",
    "QemuFsDevice",
    "QemuReaddError",
    "QemuReaddPolicy",
    "QemuReaddResult",
    "describe_device",
    "readd_fs_qemu",
]

ON_STUCK = ("notify", "system_reset")
OnStuck = Literal["notify", "system_reset"]


@dataclass(frozen=True, slots=True)
class QemuFsDevice:
    """What ``device_add`` needs to create the device again."""

    device_id: str
    chardev_id: str
    socket: str
    tag: str
    bus: str | None = None
    addr: str | None = None
    queue_size: int | None = None

    def device_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {
            "driver": "vhost-user-fs-pci",
            "id": self.device_id,
            "chardev": self.chardev_id,
            "tag": self.tag,
        }
        if self.bus is not None:
            args["bus"] = self.bus
        if self.addr is not None:
            args["addr"] = self.addr
        if self.queue_size is not None:
            args["queue-size"] = self.queue_size
        return args

    def chardev_args(self) -> dict[str, Any]:
        address = {"type": "unix", "data": {"path": self.socket}}
        return {
            "id": self.chardev_id,
            "backend": {"type": "socket", "data": {"addr": address, "server": False}},
        }


@dataclass(frozen=True, slots=True)
class QemuReaddPolicy:
    """Bounds: the unplug wait and its escalation, the wait for virtiofsd, per command."""

    device_del_timeout_s: float = 5.0
    on_stuck: OnStuck = "notify"
    ready_limit_s: float = 10.0
    ready_every_s: float = 0.005
    command_timeout_s: float = 5.0


@dataclass(frozen=True, slots=True)
class QemuReaddResult:
    """The steps done, in order, with the seconds each took."""

    device: QemuFsDevice
    steps: tuple[str, ...]
    durations: dict[str, float] = field(default_factory=dict)


class QemuReaddError(QmpError):
    """The sequence stopped at ``step``; ``steps`` were done before it."""

    def __init__(
        self, step: str, reason: str, steps: tuple[str, ...], durations: dict[str, float]
    ) -> None:
        self.step = step
        self.reason = reason
        self.steps = steps
        self.durations = durations
        super().__init__(f"re-add stopped at {step}: {reason} (done: {', '.join(steps) or '-'})")


class QemuDeviceStuck(QemuReaddError):
    """``device_del`` did not complete: guest I/O is stuck on the dead device.

    ``escalation`` is what was done about it: ``notify`` (nothing), ``system_reset``
    (the VM was reset), or ``system_reset failed`` (the reset itself failed).
    """

    def __init__(
        self,
        device: QemuFsDevice,
        timeout_s: float,
        escalation: str,
        steps: tuple[str, ...],
        durations: dict[str, float],
    ) -> None:
        self.device = device
        device_id = device.device_id
        self.device_id = device_id
        self.timeout_s = timeout_s
        self.escalation = escalation
        reason = (
            f"{device_id} was not deleted within {timeout_s:g} s (guest I/O stuck on the "
            f"dead device); escalation: {escalation}"
        )
        super().__init__("device_del", reason, steps, durations)


def describe_device(qmp: QmpClient, device_id: str) -> dict[str, Any] | None:
    """The device's QOM properties, or None when QEMU has no such device."""
    path = f"/machine/peripheral/{device_id}"
    found: dict[str, Any] = {}
    for prop in ("type", "chardev", "tag", "addr", "parent_bus", "queue-size"):
        try:
            found[prop] = qmp.execute("qom-get", {"path": path, "property": prop})
        except QmpCommandError as exc:
            if exc.error_class == "DeviceNotFound":
                return None
            if prop == "type":
                raise
    return found


def _device_from_qom(props: dict[str, Any], known: QemuFsDevice) -> QemuFsDevice:
    addr = props.get("addr")
    if isinstance(addr, int):  # QOM gives devfn: slot << 3 | function
        addr = f"{addr >> 3:#04x}.{addr & 7}"
    bus = props.get("parent_bus")
    if isinstance(bus, str) and bus:
        bus = bus.rsplit("/", 1)[-1]
    queue_size = props.get("queue-size")
    return QemuFsDevice(
        device_id=known.device_id,
        chardev_id=str(props.get("chardev") or known.chardev_id),
        socket=known.socket,
        tag=str(props.get("tag") or known.tag),
        bus=bus if isinstance(bus, str) and bus else known.bus,
        addr=addr if isinstance(addr, str) else known.addr,
        queue_size=queue_size if isinstance(queue_size, int) else known.queue_size,
    )


def readd_fs_qemu(
    qmp: QmpClient,
    known: QemuFsDevice,
    *,
    is_ready: Callable[[], bool],
    policy: QemuReaddPolicy = QemuReaddPolicy(),
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> QemuReaddResult:
    """Run the sequence of the module docstring; ``known`` fills what QOM cannot say.

    Resumable: a device or chardev that is already gone is not removed again, so a
    run that stopped half-way can simply be repeated.
    """
    steps: list[str] = []
    durations: dict[str, float] = {}
    timeout = policy.command_timeout_s

    def timed(step: str, began: float) -> None:
        steps.append(step)
        durations[step] = round(clock() - began, 6)

    began = clock()
    props = describe_device(qmp, known.device_id)
    device = _device_from_qom(props, known) if props is not None else known
    if props is not None and props.get("type") != "vhost-user-fs-pci":
        raise QemuReaddError(
            "describe", f"{known.device_id} is a {props.get('type')}", (), durations
        )
    timed("describe", began)

    if props is not None:
        began = clock()
        mark = qmp.mark()
        try:
            qmp.execute("device_del", {"id": device.device_id}, timeout_s=timeout)
        except QmpCommandError as exc:
            if exc.error_class != "DeviceNotFound":
                raise
        try:
            qmp.wait_event(
                "DEVICE_DELETED",
                lambda event: _is_device(event, device.device_id),
                timeout_s=policy.device_del_timeout_s,
                since=mark,
            )
        except QmpTimeout:
            durations["device_del"] = round(clock() - began, 6)
            escalation = _escalate(qmp, policy, timeout)
            raise QemuDeviceStuck(
                device,
                policy.device_del_timeout_s,
                escalation,
                tuple(steps),
                durations,
            ) from None
        timed("device_del", began)

    began = clock()
    try:
        qmp.execute("chardev-remove", {"id": device.chardev_id}, timeout_s=timeout)
        timed("chardev_remove", began)
    except QmpCommandError as exc:
        if "not found" not in exc.desc:
            raise QemuReaddError("chardev_remove", exc.desc, tuple(steps), durations) from exc

    began = clock()
    deadline = began + policy.ready_limit_s
    while not is_ready():
        if clock() >= deadline:
            raise QemuReaddError(
                "ready",
                f"virtiofsd for {device.socket} is not listening",
                tuple(steps),
                durations,
            )
        sleep(policy.ready_every_s)
    timed("ready", began)

    began = clock()
    qmp.execute("chardev-add", device.chardev_args(), timeout_s=timeout)
    qmp.execute("device_add", device.device_args(), timeout_s=timeout)
    timed("device_add", began)
    return QemuReaddResult(device, tuple(steps), durations)


def _is_device(event: QmpEvent, device_id: str) -> bool:
    return event.data.get("device") == device_id or str(event.data.get("path", "")).endswith(
        f"/{device_id}"
    )


def _escalate(qmp: QmpClient, policy: QemuReaddPolicy, timeout: float) -> str:
    if policy.on_stuck != "system_reset":
        return "notify"
    try:
        qmp.execute("system_reset", timeout_s=timeout)
    except QmpError as exc:
        return f"system_reset failed: {exc}"
    return "system_reset"
