"""A QEMU guest under TCG with a vhost-user-fs device on a socket someone else holds.

The guest has two serial ports, each a Unix socket QEMU serves: ttyS0 (the kernel
console and the rig's own shell) and ttyS1 (the console healer's serial transport
drives). Two QMP monitors as well: one for healer, one for the rig. QEMU runs with
``-no-reboot``: a guest reset (or ``system_reset``) ends it, which the rig sees.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from healer.actions.serial import ConsoleError, ConsoleResult, SerialConsole
from healer.vmm import QmpClient, QmpError

__all__ = ["GuestVm"]


class GuestVm:
    def __init__(
        self,
        workdir: Path,
        *,
        kernel: Path,
        initramfs: Path,
        fs_socket: Path,
        tag: str,
        mount_point: str,
        device_id: str = "fs0",
        memory_mb: int = 512,
    ) -> None:
        self.dir = workdir
        self.qmp = workdir / "qmp.sock"  # healer's monitor
        self.rig_qmp = workdir / "rig-qmp.sock"
        self.console = workdir / "console.sock"  # ttyS1: healer's serial transport
        self.shell_socket = workdir / "shell.sock"  # ttyS0: the rig's shell
        self.serial_log = workdir / "ttyS0.log"
        self.stderr = workdir / "qemu.stderr"
        self.mount_point = mount_point
        self.argv = [
            "qemu-system-x86_64",
            *("-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", str(memory_mb)),
            *("-object", f"memory-backend-memfd,id=mem,size={memory_mb}M,share=on"),
            *("-numa", "node,memdev=mem"),
            *("-chardev", f"socket,id=char-{device_id},path={fs_socket}"),
            *("-device", f"vhost-user-fs-pci,id={device_id},chardev=char-{device_id},tag={tag}"),
            *("-kernel", str(kernel), "-initrd", str(initramfs)),
            *("-append", f"console=ttyS0 quiet panic=-1 healer.tag={tag} healer.mnt={mount_point}"),
            *("-display", "none", "-nodefaults", "-no-reboot"),
            "-chardev",
            f"socket,id=ser0,path={self.shell_socket},server=on,wait=off,logfile={self.serial_log}",
            *("-serial", "chardev:ser0"),
            *("-chardev", f"socket,id=ser1,path={self.console},server=on,wait=off"),
            *("-serial", "chardev:ser1"),
            *("-qmp", f"unix:{self.qmp},server=on,wait=off"),
            *("-qmp", f"unix:{self.rig_qmp},server=on,wait=off"),
        ]
        self.proc: subprocess.Popen[bytes] | None = None
        self.shell = SerialConsole(str(self.shell_socket), prompt=r"guest# ?$")
        self.booted_s: float | None = None

    def start(self) -> GuestVm:
        with self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, limit_s: float = 240.0) -> float:
        """Until the rig's shell says the share is mounted; returns the seconds it took."""
        began = time.monotonic()
        while time.monotonic() - began < limit_s:
            if not self.alive():
                raise RuntimeError(f"QEMU exited during boot: {self.stderr.read_text()[-2000:]}")
            if self.shell_socket.exists():
                with contextlib.suppress(ConsoleError):
                    done = self.sh(f"grep -q ' {self.mount_point} virtiofs ' /proc/mounts", 5.0)
                    if done.status == 0:
                        self.booted_s = time.monotonic() - began
                        return self.booted_s
            time.sleep(0.2)
        raise RuntimeError(f"the guest did not mount the share in {limit_s:g} s")

    def sh(self, command: str, timeout_s: float = 20.0) -> ConsoleResult:
        """Run one command line in the rig's guest shell (ttyS0)."""
        return self.shell.run(command, timeout_s=timeout_s)

    def monitor(self) -> QmpClient:
        return QmpClient(str(self.rig_qmp), timeout_s=10.0)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(QmpError, OSError), self.monitor() as qmp:
                qmp.execute("quit")
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode
