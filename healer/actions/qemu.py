"""``readd_fs`` under QEMU, as ``healer watch`` runs it on a share's worker thread.

The device id is the share's name (as for cloud-hypervisor); the chardev, tag, PCI
address, bus and queue size are read from QEMU's QOM before the device goes, and
remembered for a later run that finds the device already gone. The steps journal as
events the rules already know: ``DeviceRemoved`` when QEMU reports the unplug done,
``DeviceAdded`` (a recovery signal) when the new device is in, and
``DeviceRemoveFailed`` when ``device_del`` does not complete: guest I/O is stuck on
the dead device, which no re-add can heal. That event carries the escalation taken
(``notify``, or the opt-in ``system_reset``) and the shipped rules alert on it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from healer.config import ShareConfig, VmmConfig
from healer.engine.model import Status
from healer.events import DeviceAdded, DeviceRemoved, DeviceRemoveFailed, Event, Origin
from healer.vmm.qemu_readd import (
    QemuDeviceStuck,
    QemuFsDevice,
    QemuReaddError,
    QemuReaddPolicy,
    QemuReaddResult,
    readd_fs_qemu,
)
from healer.vmm.qmp import QmpClient, QmpError, QmpTimeout

__all__ = ["QemuReadd"]

log = logging.getLogger(__name__)


class QemuReadd:
    """One share's re-add through QMP; ``last`` keeps the device QOM described."""

    def __init__(
        self,
        vmm: VmmConfig,
        share: ShareConfig,
        *,
        is_ready: Callable[[], bool],
        report: Callable[[Event], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.vmm = vmm
        self.share = share
        self.is_ready = is_ready
        self.report = report
        self.clock = clock
        self.last = QemuFsDevice(
            device_id=share.name,
            chardev_id=f"healer-{share.name}",
            socket=share.socket,
            tag=share.tag,
        )
        self.runs = 0
        self.stuck = 0
        self.result: QemuReaddResult | None = None
        self.reset = False  # the last run reset the VM (opt-in escalation)

    def __call__(self) -> tuple[Status, str]:
        """Run the sequence once (twice after an opt-in reset); a runner status."""
        self.runs += 1
        self.reset = False
        policy = QemuReaddPolicy(
            device_del_timeout_s=self.vmm.device_del_timeout_s,
            on_stuck="system_reset" if self.vmm.on_stuck == "system_reset" else "notify",
        )
        name = self.share.name
        try:
            with QmpClient(self.vmm.qmp_socket, timeout_s=policy.command_timeout_s) as qmp:
                try:
                    result = readd_fs_qemu(qmp, self.last, is_ready=self.is_ready, policy=policy)
                except QemuDeviceStuck as exc:
                    self.stuck += 1
                    self.last = exc.device
                    log.error("re-add of %s: %s", name, exc)
                    self._event(DeviceRemoveFailed, f"QEMU: {exc}", level="ERROR")
                    if exc.escalation != "system_reset":
                        return Status.TIMED_OUT, str(exc)[:500]
                    # The reset completed the unplug: add the device back for the guest
                    # that boots again (its own boot mounts the share).
                    self.reset = True
                    result = readd_fs_qemu(qmp, self.last, is_ready=self.is_ready, policy=policy)
        except QmpTimeout as exc:
            log.error("re-add of %s timed out: %s", name, exc)
            return Status.TIMED_OUT, str(exc)[:500]
        except (QemuReaddError, QmpError) as exc:
            log.error("re-add of %s failed: %s", name, exc)
            return Status.FAILED, str(exc)[:500]
        self.result = result
        self.last = result.device
        shown = ", ".join(f"{k} {v:.3f} s" for k, v in result.durations.items())
        log.warning("re-added %s through QMP: %s", name, shown)
        if "device_del" in result.steps:
            self._event(DeviceRemoved, f"QEMU deleted device {name}")
        self._event(DeviceAdded, f"QEMU added device {name} ({shown})")
        return Status.SUCCEEDED, ("after system_reset: " if self.reset else "") + shown

    def _event(self, kind: type[Event], message: str, *, level: str = "INFO") -> None:
        fields: dict[str, str] = {}
        if kind in (DeviceRemoved, DeviceAdded):
            fields["device_id"] = self.share.name
        self.report(
            kind(
                time=datetime.fromtimestamp(self.clock(), UTC),
                source=f"healer:qmp:{self.share.name}",
                offset=0,  # the decision loop gives it the stream's next position
                line=self.runs,
                share=self.share.name,
                level=level,
                message=message,
                raw=message,
                origin=Origin(program="healer"),
                **fields,
            )
        )
