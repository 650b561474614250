"""Remount the share through the guest's serial console (a Unix socket on the host).

QEMU (``-serial unix:PATH,server=on,wait=off`` or a socket chardev) and
cloud-hypervisor (``--serial socket=PATH``) expose a guest serial port as a Unix
socket; a root shell on that port (a getty with autologin, or the init's own shell)
is a transport that needs no network and no agent in the guest.

The exchange is prompt-driven: connect, turn the terminal's echo off (``stty -echo``)
and wait for the prompt, send
one command line followed by ``printf`` of a marker unique to this command and the
command's exit status, and read until the marker comes back. The marker is printed
from two separate words, so the terminal's echo of the command line never matches.
Every wait has a timeout; the whole remount is retried a bounded number of times.

The command text is built only from configuration values (the tag and the mount
point, both validated, and quoted here anyway). Nothing read from a log or from the
console reaches it. A command never runs in the background, and nothing in it may
block on the share before the device is back: a shell stuck in the kernel on a dead
share would be lost (the guest's D state cannot be interrupted from the console).
"""

from __future__ import annotations

import re
import secrets
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from healer.actions.guest import RemountFailed
from healer.unixsock import connect_unix

__all__ = ["ConsoleError", "ConsoleResult", "SerialConsole", "SerialRemount", "remount_command"]

_MAX_OUTPUT = 1 << 16
_ESCAPES = re.compile(rb"\x1b\[[0-9;?]*[A-Za-z]")
_SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/-]*$")


class ConsoleError(RemountFailed):
    """The console did not answer as expected: unreachable, no prompt, no marker."""


@dataclass(frozen=True, slots=True)
class ConsoleResult:
    """A command's exit status and its output lines (the echo and prompts removed)."""

    status: int
    output: tuple[str, ...]
    seconds: float


class SerialConsole:
    """One prompt-driven exchange per :meth:`run`, on a fresh connection each time."""

    def __init__(
        self,
        path: str,
        *,
        prompt: str = r"[#$] ?$",
        connect_timeout_s: float = 2.0,
        prompt_timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.prompt = re.compile(prompt.encode())
        self.connect_timeout_s = connect_timeout_s
        self.prompt_timeout_s = prompt_timeout_s
        self.clock = clock

    def __repr__(self) -> str:
        return f"SerialConsole({self.path!r}, prompt={self.prompt.pattern.decode()!r})"

    def run(self, command: str, *, timeout_s: float) -> ConsoleResult:
        """Run one command line in the guest shell; its status and output."""
        if "\n" in command or "\r" in command:
            msg = "a console command is one line"
            raise ValueError(msg)
        began = self.clock()
        sock = self._connect()
        try:
            buffer = bytearray()
            tag = secrets.token_hex(6)
            # Turn the echo off (if the terminal can), and know which prompt is the
            # one after that: earlier output may hold older prompts.
            sock.sendall(f"stty -echo 2>/dev/null; printf '%s%s\\n' HEALER{tag} -sync\n".encode())
            synced = f"HEALER{tag}-sync".encode()

            def prompted(data: bytes) -> re.Match[bytes] | None:
                at = data.find(synced)
                return self._prompted(data[at + len(synced) :]) if at >= 0 else None

            self._until(sock, buffer, prompted, self.prompt_timeout_s, "the prompt")
            marker = re.compile(rb"HEALER" + tag.encode() + rb":(\d+)\r?$", re.M)
            # The output is what comes after a begin marker the shell prints (its echo,
            # if any, reads "HEALER<tag> -begin"): a prompt's tail arriving late or an
            # echo that was not turned off stays before it.
            line = (
                f"printf '%s%s\\n' HEALER{tag} -begin; {command}; "
                f"printf '%s:%s\\n' HEALER{tag} \"$?\"\n"
            )
            del buffer[:]
            sock.sendall(line.encode())
            found = self._until(sock, buffer, marker.search, timeout_s, "the command's end")
        finally:
            sock.close()
        text = _ESCAPES.sub(b"", bytes(buffer[: found.start()])).decode("utf-8", "replace")
        begun = text.find(f"HEALER{tag}-begin")
        if begun >= 0:
            text = text[text.find("\n", begun) + 1 :]
        lines = [part.rstrip("\r") for part in text.split("\n")]
        output = tuple(part for part in lines if part.strip())
        return ConsoleResult(int(found.group(1)), output, round(self.clock() - began, 6))

    def _connect(self) -> socket.socket:
        try:
            return connect_unix(self.path, self.connect_timeout_s)
        except OSError as exc:
            msg = f"serial console {self.path} is unreachable: {exc.strerror or exc}"
            raise ConsoleError(msg) from exc

    def _prompted(self, buffer: bytes) -> re.Match[bytes] | None:
        # Line editors follow the prompt with terminal queries (busybox: ESC [6n).
        return self.prompt.search(_ESCAPES.sub(b"", buffer).rstrip(b"\r\n"))

    def _until(
        self,
        sock: socket.socket,
        buffer: bytearray,
        found: Callable[[bytes], re.Match[bytes] | None],
        timeout_s: float,
        what: str,
    ) -> re.Match[bytes]:
        deadline = self.clock() + timeout_s
        while True:
            hit = found(bytes(buffer))
            if hit is not None:
                return hit
            left = deadline - self.clock()
            if left <= 0:
                msg = f"serial console {self.path}: {what} did not come within {timeout_s:g} s"
                raise ConsoleError(msg)
            sock.settimeout(left)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError as exc:
                msg = f"serial console {self.path} failed: {exc.strerror or exc}"
                raise ConsoleError(msg) from exc
            if not chunk:
                msg = f"serial console {self.path} closed while waiting for {what}"
                raise ConsoleError(msg)
            buffer += chunk
            if len(buffer) > _MAX_OUTPUT:
                del buffer[: len(buffer) - _MAX_OUTPUT]


def remount_command(tag: str, mount_point: str, *, rescan: bool = False, tries: int = 250) -> str:
    """The guest shell line: unmount, mount again (waiting for the device), probe.

    It prints ``healer-remount START MOUNTED END TRIES`` with the guest's uptime at
    each point, so the time spent waiting for the device to appear can be told from
    the mount itself.
    """
    if not _SAFE_PATH.match(mount_point):
        msg = f"mount point {mount_point!r} cannot go into a guest shell line"
        raise ValueError(msg)
    mp, fs_tag = shlex.quote(mount_point), shlex.quote(tag)
    up = "$(cut -d' ' -f1 /proc/uptime)"
    parts = [f"s={up}"]
    if rescan:
        parts.append("echo 1 > /sys/bus/pci/rescan")
    parts += [
        f"umount {mp} 2>/dev/null",
        "n=0",
        f"until mount -t virtiofs {fs_tag} {mp} 2>/dev/null; do n=$((n+1)); "
        f"[ $n -ge {int(tries)} ] && break; sleep 0.02; done",
        f"m={up}",
        f"grep -q ' {mount_point} virtiofs ' /proc/mounts && ls {mp} >/dev/null",
        "r=$?",
        f'echo "healer-remount $s $m {up} $n"',
        "[ $r -eq 0 ]",
    ]
    return "; ".join(parts)


@dataclass(slots=True)
class SerialRemount:
    """The serial counterpart of GuestRemount; ``timings`` from the guest's uptime."""

    console: SerialConsole
    tag: str
    mount_point: str
    rescan: bool = False
    timeout_s: float = 15.0
    max_attempts: int = 3
    attempts: int = 0
    timings: dict[str, float] = field(default_factory=dict)

    def run(self) -> None:
        command = remount_command(self.tag, self.mount_point, rescan=self.rescan)
        for attempt in Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=wait_fixed(0.2),
            retry=retry_if_exception_type(RemountFailed),
            reraise=True,
        ):
            with attempt:
                self.attempts += 1
                result = self.console.run(command, timeout_s=self.timeout_s)
                self._read_timings(result.output)
                if result.status != 0:
                    shown = " | ".join(result.output)[-300:]
                    msg = f"remount in the guest failed (exit {result.status}): {shown}"
                    raise RemountFailed(msg)

    def _read_timings(self, output: tuple[str, ...]) -> None:
        for line in output:
            parts = line.split()
            if len(parts) == 5 and parts[0] == "healer-remount":
                try:
                    start, mounted, end = (float(p) for p in parts[1:4])
                except ValueError:
                    continue
                self.timings = {
                    "guest_bind": round(mounted - start, 3),
                    "remount": round(end - mounted, 3),
                    "mount_tries": float(parts[4]),
                }
