"""Remount the share in the guest through a configured transport (an argv prefix).

The commands are argv lists: the transport (e.g. ``ssh root@vm --``), then
``umount``, ``mount -t virtiofs TAG DIR`` and a probe ``ls DIR``. Tag and mount
point come from the validated configuration, never from logs. A PCI rescan
(``tee /sys/bus/pci/rescan`` fed ``1``) is available for hot-plugged devices the
guest does not probe by itself. Each command has a timeout; the mount is retried a
bounded number of times with backoff, and every attempt is counted.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from tenacity import (
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from healer.config import GuestConfig
from healer.supervise.capture import run_captured

__all__ = ["GuestRemount", "RemountFailed"]


class RemountFailed(Exception):
    """The guest would not mount the share (after the bounded retries)."""


@dataclass(slots=True)
class GuestRemount:
    """Runs the remount for one share; ``attempts`` counts every mount tried."""

    guest: GuestConfig
    tag: str
    timeout_s: float = 15.0
    max_attempts: int = 3
    max_delay_s: float = 30.0
    attempts: int = 0
    log: list[str] = field(default_factory=list)

    def run(self) -> None:
        """Rescan (if configured), unmount (ignoring 'not mounted'), mount, probe."""
        if self.guest.rescan:
            self._call(["tee", "/sys/bus/pci/rescan"], stdin=b"1\n")
        self._call(["umount", self.guest.mount_point], check=False)
        for attempt in Retrying(
            stop=stop_after_attempt(self.max_attempts) | stop_after_delay(self.max_delay_s),
            wait=wait_exponential_jitter(initial=0.2, max=5.0),
            retry=retry_if_exception_type(RemountFailed),
            reraise=True,
        ):
            with attempt:
                self.attempts += 1
                self._call(["mount", "-t", "virtiofs", self.tag, self.guest.mount_point])
                self._call(["ls", self.guest.mount_point])

    def _call(self, command: Sequence[str], *, check: bool = True, stdin: bytes = b"") -> None:
        argv = [*self.guest.remount, *command]
        try:
            done = run_captured(argv, stdin=stdin, timeout_s=self.timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise RemountFailed(f"{command[0]} timed out after {self.timeout_s} s") from exc
        except OSError as exc:
            raise RemountFailed(f"cannot run {argv[0]}: {exc.strerror}") from exc
        self.log.append(f"{' '.join(command)}: exit {done.returncode}")
        if check and done.returncode != 0:
            error = done.stderr.decode("utf-8", "replace").strip()[-500:]
            raise RemountFailed(f"{command[0]} failed (exit {done.returncode}): {error}")
