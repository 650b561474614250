"""The end-to-end rig: ``healer watch`` (real virtiofsd, QEMU over QMP, the serial
console) and a real guest that mounts the share healer's socket serves.

The socket and the virtiofsd are the holder's (the process ``healer watch`` starts,
which outlives it): the daemon is found in the holder's state, and closing the rig
stops healer, then everything with ``healer stop``.

Used by tests/test_guest.py and bench/kill_to_usable.py. Nothing here asserts a
time: every wait is bounded and fails with what it waited for.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson
from rulepatch import edit, shipped_rules, write_rules

from guest.image import build_initramfs, find_kernel
from guest.vm import GuestVm
from healer.config import load_config
from healer.holder.state import Store, start_time
from healer.live import holder_dir
from healer.supervise import find_virtiofsd
from healer.supervise.process import exists

__all__ = ["ROOT", "Rig", "missing", "relaxed_rules"]

ROOT = Path(__file__).resolve().parents[2]
MOUNT_POINT = "/mnt/fs0"


def missing() -> str | None:
    """What the rig cannot run without, as an install hint; None when all is there."""
    if not any(Path(d, "qemu-system-x86_64").exists() for d in os.get_exec_path()):
        return "qemu-system-x86_64 (apt-get install qemu-system-x86)"
    if find_virtiofsd() is None:
        return "virtiofsd (apt-get install qemu-system-common)"
    if not any(Path(b).exists() for b in ("/bin/busybox", "/usr/bin/busybox")):
        return "busybox (apt-get install busybox-static)"
    if find_kernel() is None:
        return "the guest kernel (scripts/fetch-guest-kernel)"
    return None


def relaxed_rules(target: Path) -> Path:
    """The shipped rules for many kills in a row: the storm rules would otherwise open
    the circuit at the fifth exit within a minute (as they should in production); the
    backoff starts at 0.1 s instead of 1 s (kills in a row still back off: 0.1, 0.2,
    0.4 s ...) and from zero again after one healthy second instead of sixty."""
    rules = shipped_rules()
    rules = replace(rules, policy=replace(rules.policy, healthy_after_s=1.0, backoff_initial_s=0.1))
    rules = edit(rules, lambda r: r.correlate == "threshold", lambda r: replace(r, count=1000))
    return write_rules(rules, target)


class Rig:
    """One guest and one ``healer watch``; see the module docstring."""

    def __init__(self, *, on_stuck: str = "notify", device_del_timeout_s: float = 2.0) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="healer-guest-"))
        self.dir.chmod(0o700)
        self.shared = self.dir / "shared"
        self.shared.mkdir()
        self.socket = self.dir / "fs0.sock"
        self.journal_dir = self.dir / "journal"
        self.healer_log = self.dir / "healer.stderr"
        kernel = find_kernel()
        if kernel is None:
            msg = "no guest kernel: run scripts/fetch-guest-kernel"
            raise RuntimeError(msg)
        initramfs = build_initramfs(kernel, kernel)
        self.vm = GuestVm(
            self.dir,
            kernel=kernel / "vmlinuz",
            initramfs=initramfs,
            fs_socket=self.socket,
            tag="fs0",
            mount_point=MOUNT_POINT,
        )
        rules = relaxed_rules(self.dir / "rules")
        self.config = self.dir / "healer.toml"
        self.config.write_text(
            f'[healer]\njournal = "{self.journal_dir}"\nrules = "{rules}"\n\n'
            f'[[share]]\nname = "fs0"\nsocket = "{self.socket}"\nshared_dir = "{self.shared}"\n\n'
            f'[vmm]\nkind = "qemu"\nqmp_socket = "{self.vm.qmp}"\n'
            f'on_stuck = "{on_stuck}"\ndevice_del_timeout = {device_del_timeout_s}\n\n'
            f'[guest]\ntransport = "serial"\nconsole = "{self.vm.console}"\n'
            f'mount_point = "{MOUNT_POINT}"\n'
        )
        self.healer: subprocess.Popen[bytes] | None = None
        self.lines: list[tuple[float, str]] = []  # (monotonic arrival, healer log line)

    # --- life cycle -----------------------------------------------------------------

    def start(self) -> Rig:
        self.start_healer()
        try:
            self.wait(
                lambda: self.socket.exists() and self.daemon_pid() is not None, 30, "the socket"
            )
            self.vm.start()
            self.vm.wait_ready()
        except BaseException:
            self.close()  # the holder and its virtiofsd would outlive a rig that failed
            raise
        return self

    def start_healer(self) -> None:
        """``healer watch`` on the rig's configuration (again, after :meth:`kill_healer`:
        it adopts the holder's daemon)."""
        self.healer = subprocess.Popen(
            [sys.executable, "-m", "healer", "watch", "--config", str(self.config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        threading.Thread(target=self._read_log, args=(self.healer,), daemon=True).start()

    def kill_healer(self) -> None:
        """SIGKILL ``healer watch`` (the brain; the holder and virtiofsd stay)."""
        assert self.healer is not None
        self.healer.kill()
        self.healer.wait(10)

    def close(self) -> None:
        self.vm.stop()
        self._stop_healer()
        if not os.environ.get("HEALER_KEEP_RIG"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def _stop_healer(self) -> None:
        """SIGTERM stops healer only; ``healer stop`` then ends the holder, virtiofsd and
        the socket (bounded waits)."""
        if self.healer is not None and self.healer.poll() is None:
            self.healer.send_signal(signal.SIGTERM)
            try:
                self.healer.wait(30)
            except subprocess.TimeoutExpired:
                self.healer.kill()
                self.healer.wait(10)
        holder = self.holder_pid()
        daemon = self.daemon_pid()
        subprocess.run(
            [sys.executable, "-m", "healer", "stop", "--config", str(self.config)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
        gone = [pid for pid in (holder, daemon) if pid is not None]
        self.wait(lambda: not any(exists(pid) for pid in gone), 60, "the holder to stop")

    def _read_log(self, healer: subprocess.Popen[bytes]) -> None:
        """healer's stderr to a file, and each line with the time it arrived."""
        assert healer.stderr is not None
        with healer.stderr, self.healer_log.open("ab") as copy:
            for raw in healer.stderr:
                self.lines.append((time.monotonic(), raw.decode("utf-8", "replace").rstrip()))
                copy.write(raw)
                copy.flush()

    def __enter__(self) -> Rig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- looking and acting ---------------------------------------------------------

    def wait(self, condition: Callable[[], object], limit_s: float, what: str) -> None:
        deadline = time.monotonic() + limit_s
        while not condition():
            if time.monotonic() > deadline:
                tail = self.healer_log.read_text(errors="replace")[-3000:]
                msg = f"{what}: not reached within {limit_s:g} s; healer said:\n{tail}"
                raise TimeoutError(msg)
            time.sleep(0.005)

    def holder_pid(self) -> int | None:
        """The holder of the rig's share, from its lock file, while it runs."""
        try:
            text = (holder_dir(load_config(self.config)) / "holder.lock").read_text().strip()
        except OSError:
            return None
        return int(text) if text.isdigit() and exists(int(text)) else None

    def daemon_pid(self) -> int | None:
        """The share's running virtiofsd as the holder records it (``holder.json``): the
        same process (start time checked, pids are reused) and not exited."""
        state = holder_dir(load_config(self.config)) / "holder.json"
        shares, _exits = Store(state).load()
        for share in shares:
            daemon = share.daemon
            if share.name != "fs0" or daemon is None or not exists(daemon.pid):
                continue
            if daemon.starttime is None or start_time(daemon.pid) == daemon.starttime:
                return daemon.pid
        return None

    def records(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for segment in sorted(self.journal_dir.glob("segment-*")):
            out += [
                orjson.loads(line)
                for line in segment.read_bytes().splitlines()
                if line.endswith(b"}")
            ]
        return out

    def outcomes(self, action: str) -> list[tuple[str, str]]:
        """(key, final status) of every decided ``action``, in journal order."""
        journal = self.records()
        keys = [r["key"] for r in journal if r["type"] == "decision" and r["action"] == action]
        final = {
            r["key"]: r["status"]
            for r in journal
            if r["type"] == "outcome" and r["status"] != "started"
        }
        return [(k, final[k]) for k in keys if k in final]

    def kill(self) -> int:
        """SIGKILL the share's virtiofsd (the holder's child); its pid."""
        self.wait(lambda: self.daemon_pid() is not None, 10, "a running virtiofsd")
        pid = self.daemon_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        return pid

    def healed(self, pid: int) -> bool:
        """The share is usable again after ``pid`` died: its exit is journaled, and every
        remount decided since its first report has an outcome, one of them success."""
        journal = self.records()
        about = [
            i
            for i, r in enumerate(journal)
            if r["type"] == "event"
            and r["event"]["origin"].get("pid") == pid
            and r["event"]["kind"] in ("VirtiofsdExited", "VirtiofsdClientDisconnected")
        ]
        if not any(journal[i]["event"]["kind"] == "VirtiofsdExited" for i in about):
            return False
        keys = [
            r["key"]
            for r in journal[about[0] :]
            if r["type"] == "decision" and r["action"] == "remount_guest"
        ]
        final = {
            r["key"]: r["status"]
            for r in journal
            if r["type"] == "outcome" and r["status"] != "started"
        }
        return (
            bool(keys) and all(k in final for k in keys) and "succeeded" in {final[k] for k in keys}
        )

    def round_trip(self, name: str) -> tuple[str, str]:
        """A file written in the guest read on the host, and the reverse."""
        done = self.vm.sh(f"echo 'from guest {name}' > {MOUNT_POINT}/{name}.g && sync")
        assert done.status == 0, done
        on_host = (self.shared / f"{name}.g").read_text().strip()
        (self.shared / f"{name}.h").write_text(f"from host {name}\n")
        back = self.vm.sh(f"cat {MOUNT_POINT}/{name}.h")
        assert back.status == 0, back
        # The kernel's console shares ttyS0: keep only the line the file holds.
        seen = [line.strip() for line in back.output if line.strip().startswith("from host")]
        return on_host, " ".join(seen)
