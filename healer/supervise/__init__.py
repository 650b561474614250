"""Supervision of virtiofsd: a listening socket healer holds, the daemon it runs."""

from healer.supervise.held import HeldSocket, is_listening
from healer.supervise.process import ExitStatus, SupervisedVirtiofsd, find_virtiofsd, virtiofsd_argv

__all__ = [
    "ExitStatus",
    "HeldSocket",
    "SupervisedVirtiofsd",
    "find_virtiofsd",
    "is_listening",
    "virtiofsd_argv",
]
