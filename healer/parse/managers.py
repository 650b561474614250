"""Management layers speaking about virtiofsd in their own words.

libvirt, LXD, podman, systemd-vmspawn, bcvk and the like start virtiofsd for the VM
and report its failures themselves; these are the wordings seen in their users'
reports (tests/field_corpus). A manager's own start-up failure (no binary, no
listener) is a ``VirtiofsdStartFailed``; a daemon it saw die, a ``VirtiofsdExited``.
"""

from __future__ import annotations

import re

from healer.events import AddFsFailed, VirtiofsdExited, VirtiofsdStartFailed, VmmExited
from healer.parse.patterns import Built, Pattern, error_fields
from healer.parse.record import Record

__all__ = ["KEYWORDS", "PATTERNS", "PROGRAM"]

PROGRAM: str | None = None
"""Who prints the messages below when the line itself does not say."""

# Literal needles for the prefilter (see cloud_hypervisor.KEYWORDS).
KEYWORDS = (
    "virtiofsd died unexpectedly",
    "satisfying virtiofsd",
    " for virtiofsd: ",
    "Failed to setup virtiofsd",
    "virtiofsd binary not found",
    "failed to find virtiofsd",
    "'virtiofs' requires shared memory",
    "exited unexpectedly with exit code",
    "Failed to prepare unix socket '",
)


def _died(rec: Record, m: re.Match[str]) -> Built:
    return VirtiofsdExited, {"name": "virtiofsd", "reporter": "libvirt"}


def _not_found(rec: Record, m: re.Match[str]) -> Built:
    return VirtiofsdStartFailed, {"chain": [], "error_kind": "NotFound", "errno": None}


def _set_up(rec: Record, m: re.Match[str]) -> Built:
    return VirtiofsdStartFailed, {"chain": [], "error_kind": None, "errno": None}


def _socket(rec: Record, m: re.Match[str]) -> Built:
    """systemd-vmspawn could not make the socket of a ``--bind`` share's virtiofsd."""
    return VirtiofsdStartFailed, {**error_fields(m.group(2)), "path": m.group(1)}


def _shared_memory(rec: Record, m: re.Match[str]) -> Built:
    return AddFsFailed, {"chain": [], "error_kind": "Unsupported", "errno": None}


def _vmm_exited(rec: Record, m: re.Match[str]) -> Built:
    return VmmExited, {"chain": [], "reason": m.group(0), "causes": []}


PATTERNS: list[Pattern] = [
    (re.compile(r"virtiofsd died unexpectedly"), _died),  # libvirt
    (re.compile(r"Unable to find a satisfying virtiofsd"), _not_found),  # libvirt
    (re.compile(r"virtiofsd binary not found|failed to find virtiofsd"), _not_found),
    # LXD's "Failed to setup virtiofsd ...", vmspawn's "Failed to enter user namespace for
    # virtiofsd: ...": a manager that could not set the daemon up
    (
        re.compile(
            r"Failed to setup virtiofsd|[Ff]ailed to [a-z]{1,12} [^:\n]{1,60}? for virtiofsd: "
        ),
        _set_up,
    ),
    # vmspawn makes one socket per --bind share in its runtime directory, sock-<random>
    (
        re.compile(
            r"Failed to prepare unix socket '(/[^'\n]{0,4000}/vmspawn/[^'\n]{1,255}/sock-\w{1,64})'"
            r": ([A-Z][\w ]{0,64})"
        ),
        _socket,
    ),
    (re.compile(r"'virtiofs' requires shared memory"), _shared_memory),  # libvirt, attach
    (
        re.compile(r"\b(?:qemu|cloud-hypervisor) exited unexpectedly with exit code \d+"),
        _vmm_exited,
    ),
]
