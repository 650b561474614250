"""Talking to the VMM: cloud-hypervisor's HTTP API (or ch-remote), QEMU's QMP, and the
re-add heal for each."""

from healer.vmm.ch_api import ChApiClient, fs_config, fs_devices
from healer.vmm.ch_remote import ChRemote
from healer.vmm.errors import ChApiError, ChError, ChTimeout, ChUnreachable, error_messages
from healer.vmm.qemu_readd import (
    QemuDeviceStuck,
    QemuFsDevice,
    QemuReaddError,
    QemuReaddPolicy,
    QemuReaddResult,
    describe_device,
    readd_fs_qemu,
)
from healer.vmm.qmp import (
    QmpClient,
    QmpClosed,
    QmpCommandError,
    QmpError,
    QmpEvent,
    QmpTimeout,
    QmpUnreachable,
)
from healer.vmm.readd import FsShare, ReaddError, ReaddPolicy, ReaddResult, VmmApi, readd_fs

__all__ = [
    "ChApiClient",
    "ChApiError",
    "ChError",
    "ChRemote",
    "ChTimeout",
    "ChUnreachable",
    "FsShare",
    "QemuDeviceStuck",
    "QemuFsDevice",
    "QemuReaddError",
    "QemuReaddPolicy",
    "QemuReaddResult",
    "QmpClient",
    "QmpClosed",
    "QmpCommandError",
    "QmpError",
    "QmpEvent",
    "QmpTimeout",
    "QmpUnreachable",
    "ReaddError",
    "ReaddPolicy",
    "ReaddResult",
    "VmmApi",
    "describe_device",
    "error_messages",
    "fs_config",
    "fs_devices",
    "readd_fs",
    "readd_fs_qemu",
]
