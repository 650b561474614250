"""Supervision of virtiofsd: a listening socket healer holds, the daemon it runs,
or (adopt mode) a daemon someone else runs, watched without touching it."""

from healer.supervise.adopt import AdoptedVirtiofsd, read_pid_file, socket_owner
from healer.supervise.held import HeldSocket, has_client, is_listening, listening_inode
from healer.supervise.process import (
    DaemonInfo,
    ExitStatus,
    SupervisedVirtiofsd,
    find_daemon,
    find_virtiofsd,
    virtiofsd_argv,
)

__all__ = [
    "AdoptedVirtiofsd",
    "DaemonInfo",
    "ExitStatus",
    "HeldSocket",
    "SupervisedVirtiofsd",
    "find_daemon",
    "find_virtiofsd",
    "has_client",
    "is_listening",
    "listening_inode",
    "read_pid_file",
    "socket_owner",
    "virtiofsd_argv",
]
