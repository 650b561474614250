"""Talking to the VMM: cloud-hypervisor's HTTP API (or ch-remote) and the re-add heal."""

from healer.vmm.ch_api import ChApiClient, fs_config
from healer.vmm.ch_remote import ChRemote
from healer.vmm.errors import ChApiError, ChError, ChTimeout, ChUnreachable, error_messages
from healer.vmm.readd import FsShare, ReaddError, ReaddPolicy, ReaddResult, VmmApi, readd_fs

__all__ = [
    "ChApiClient",
    "ChApiError",
    "ChError",
    "ChRemote",
    "ChTimeout",
    "ChUnreachable",
    "FsShare",
    "ReaddError",
    "ReaddPolicy",
    "ReaddResult",
    "VmmApi",
    "error_messages",
    "fs_config",
    "readd_fs",
]
