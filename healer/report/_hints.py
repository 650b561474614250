"""Contributing-factor hints: what a failure event suggests about its cause."""

from __future__ import annotations

import re

from healer.events import Event
from healer.report._format import clip

__all__ = ["hints"]

_EMFILE = re.compile(r"too many open files|EMFILE", re.IGNORECASE)
_BACKEND = (
    "BackendConnectTimeout",
    "BackendConnectFailed",
    "BackendReconnectFailed",
    "AddFsFailed",
)
_TEXTS = {
    "exit0": "virtiofsd exited with status 0, which supervisors treat as a clean exit: "
    "restart-on-failure policies do not start it again (exit-0 masking). "
    "virtiofsd exits 0 whenever its client leaves, even after errors.",
    "seccomp": "virtiofsd was killed by SIGSYS: its seccomp filter rejected a system call "
    "(run it with --seccomp=log to see which).",
    "emfile": "too many open files (EMFILE): raise virtiofsd's --rlimit-nofile or the "
    "service's open-file limit.",
    "window": "cloud-hypervisor's 60 s connect window ran out before virtiofsd listened "
    "on the socket; it does not try again by itself.",
    "stale": "the vhost-user socket refused the connection: the socket file exists but "
    "nothing listens on it (a stale socket of an earlier virtiofsd).",
    "nosocket": "the vhost-user socket file does not exist: virtiofsd is not running, or "
    "listens on another path.",
    "vmm": "the cloud-hypervisor process itself ended: devices cannot be re-added "
    "until a VMM runs again.",
    "api": "the VMM's API socket refused connections: ch-remote commands (and so "
    "readd_fs) cannot work while it is down.",
    "reset": "a VM reset came first: virtiofsd losing its client right after it is the "
    "expected reboot disconnect; what matters is whether a virtiofsd listens "
    "again before the VMM reconnects.",
    "tag": "the guest kernel did not know the tag: the fs device was missing when "
    "the guest mounted it.",
}


def hints(event: Event) -> list[tuple[str, str]]:
    """Contributing-factor hints an event suggests: (id, text)."""
    kind = event.kind
    error_kind = getattr(event, "error_kind", None)
    found = {
        "exit0": kind == "VirtiofsdExited" and getattr(event, "status", None) == 0,
        "seccomp": kind == "VirtiofsdExited"
        and getattr(event, "signal", None) in ("SIGSYS", "SYS", "31"),
        "emfile": getattr(event, "errno", None) == 24 or bool(_EMFILE.search(event.message)),
        "window": kind == "BackendConnectTimeout",
        "stale": kind in _BACKEND and error_kind == "ConnectionRefused",
        "nosocket": kind in _BACKEND and error_kind == "NotFound",
        "vmm": kind == "VmmExited"
        or (kind == "VmRebootFailed" and bool(getattr(event, "vmm_exited", False))),
        "api": kind == "ApiUnreachable",
        "reset": kind == "VmReset",
        "start": kind == "VirtiofsdStartFailed",
        "panic": kind == "VirtiofsdPanicked",
        "tag": kind == "GuestTagNotFound",
    }
    return [(name, _text(name, event)) for name, hit in found.items() if hit]


def _text(name: str, event: Event) -> str:
    if name == "start":
        path = getattr(event, "path", None)
        where = f" ({path})" if path else ""
        return f"virtiofsd could not start{where}: {clip(event.message, 90)}"
    if name == "panic":
        return f"virtiofsd panicked: {clip(event.message, 90)}"
    return _TEXTS[name]
