"""Write a deterministic mixed-format log plus its ground truth, for the replay benchmark.

The file mixes every line format healer reads (cloud-hypervisor logger lines of
every era, wrappers around them, Rust and C virtiofsd, guest dmesg, mount(8),
fatal chains, ch-remote, event-monitor JSON, supervisord) with a lot of noise, so
that a benchmark measures the realistic case: about 99 % of lines produce no event.

Ground truth goes to ``OUT.truth.json``: how many records of each healer event kind
were written. A multi-line record (a vm.sh continuation, a fatal chain, a JSON
object, a panic) counts once. Filler never contains a healing-relevant message.

Same arguments give a byte-identical file: all randomness comes from one
``random.Random(seed)`` and no clock, hash order or locale is read. Lines are
streamed, so memory stays flat whatever N is.
"""

from __future__ import annotations

import argparse
import json
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

__all__ = ["KINDS", "generate", "main"]

KINDS = (
    "BackendConnectTimeout",
    "BackendDisconnected",
    "FsDeviceCreating",
    "VmReset",
    "ApiRequest",
    "AddFsFailed",
    "DeviceNeedsReset",
    "VmmExited",
    "VmRebootFailed",
    "ApiUnreachable",
    "ApiError",
    "DeviceRemoved",
    "VmmLifecycle",
    "VirtiofsdListening",
    "VirtiofsdClientConnected",
    "VirtiofsdClientDisconnected",
    "VirtiofsdDaemonFailed",
    "VirtiofsdPanicked",
    "VirtiofsdExited",
    "GuestTagNotFound",
    "GuestMountFailed",
    "GuestReboot",
)
"""Every kind the generator can write, in a stable order for the truth file."""

Lines = list[str]
"""Output lines without their ``\\n``; a ``\\r`` at the end is kept as written."""

BASE_WALL_NS = 1_721_307_235 * 1_000_000_000  # 2024-07-18T12:53:55Z
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
VMSH_INDENT = " " * 15
HOSTS = ("nucsrv", "host", "test", "worker-3", "runnervmwffz4")
TAGS = ("myfs", "video", "share", "data", "store", "rootfs")
SOCKETS = (
    "/run/x.sock",
    "/tmp/vsd.sock",
    "/run/virtiofsd/vm1-share.sock",
    "/run/kata/70249bd469f6/vhost-fs.sock",
    "/var/lib/microvms/guest0/store.sock",
)
SUPERVISED = ("virtiofsd", "virtiofsd-ro-store", "virtiofsd-home", "virtiofsd-log-store")
FS_OPS = (
    ("Lookup", 1),
    ("Getattr", 3),
    ("Open", 14),
    ("Read", 15),
    ("Write", 16),
    ("Release", 18),
    ("Flush", 25),
    ("Readdirplus", 44),
    ("Statfs", 17),
)

# CH logger eras: how the uptime is printed, whether a thread is shown, line ending.
ERA_V012 = "v0.12"  # {:?}, no thread
ERA_V28 = "v13-v28"  # {:?}, <thread>
ERA_V32 = "v29-v32"  # {:.6?}
ERA_V48 = "v33-v48"  # {:.6?} + \r\n
ERA_V49 = "v49+"  # {:>10.6?}s of f32 seconds + \r\n
ERA_BARE = "no-thread"  # user's pipeline stripped <thread>: two spaces before LEVEL
ERAS = (ERA_V012, ERA_V28, ERA_V32, ERA_V48, ERA_V49, ERA_BARE)


def rust_duration_debug(nanos: int, precision: int | None = None) -> str:
    """Format like Rust's ``{:?}`` / ``{:.N?}`` of ``std::time::Duration`` (unit by size)."""
    secs, sub = divmod(nanos, 1_000_000_000)
    if secs > 0:
        integer, frac, divisor, unit = secs, sub, 100_000_000, "s"
    elif sub >= 1_000_000:
        integer, frac, divisor, unit = sub // 1_000_000, sub % 1_000_000, 100_000, "ms"
    elif sub >= 1_000:
        integer, frac, divisor, unit = sub // 1_000, sub % 1_000, 100, "µs"
    else:
        integer, frac, divisor, unit = sub, 0, 1, "ns"
    limit = 9 if precision is None else min(precision, 9)
    digits: list[int] = []
    while frac > 0 and len(digits) < limit:
        digits.append(frac // divisor)
        frac %= divisor
        divisor //= 10
    if frac > 0 and frac >= divisor * 5:  # Rust rounds half up, carrying leftwards
        pos = len(digits) - 1
        while pos >= 0 and digits[pos] == 9:
            digits[pos] = 0
            pos -= 1
        if pos >= 0:
            digits[pos] += 1
        else:
            integer += 1
    width = len(digits) if precision is None else precision
    text = "".join(map(str, digits)).ljust(width, "0")[:width] if width else ""
    return f"{integer}.{text}{unit}" if text else f"{integer}{unit}"


def f32(value: float) -> float:
    """Round to the nearest f32, as CH v49+ stores its uptime."""
    rounded: float = struct.unpack("f", struct.pack("f", value))[0]
    return rounded


@dataclass(frozen=True, slots=True)
class Wall:
    """One wall-clock second, pre-formatted for every wrapper that prints it."""

    iso: str  # 2024-07-18T12:53:55
    date: str  # 2024-07-18
    clock: str  # 12:53:55
    syslog: str  # Jul 18 12:53:55
    vmsh: str  # 20240718T12:53


class MixedLog:
    """Record factories sharing one RNG and one simulated clock."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.wall_ns = BASE_WALL_NS
        self._wall_sec = -1
        self._wall: Wall | None = None
        self.uptime = dict.fromkeys(ERAS, 0)
        self.dmesg_ns = 5_000_000_000
        self.unique = 1
        for era in ERAS:
            self._restart_ch(era)

    # -- clocks --------------------------------------------------------------------

    def tick(self) -> None:
        """Advance wall time a little before each record."""
        self.wall_ns += self.rng.randint(100_000, 4_000_000)

    @property
    def wall(self) -> Wall:
        sec = self.wall_ns // 1_000_000_000
        if sec != self._wall_sec or self._wall is None:
            t = datetime.fromtimestamp(sec, tz=UTC)
            self._wall_sec = sec
            self._wall = Wall(
                iso=f"{t:%Y-%m-%dT%H:%M:%S}",
                date=f"{t:%Y-%m-%d}",
                clock=f"{t:%H:%M:%S}",
                syslog=f"{MONTHS[t.month - 1]} {t.day:02d} {t:%H:%M:%S}",
                vmsh=f"{t:%Y%m%dT%H:%M}",
            )
        return self._wall

    def rfc3339_ns(self) -> str:
        return f"{self.wall.iso}.{self.wall_ns % 1_000_000_000:09d}Z"

    def _restart_ch(self, era: str) -> None:
        # A fresh process: the first lines print in ns/µs/ms units.
        start = self.rng.choice((self.rng.randint(90, 999), self.rng.randint(1_000, 3_000_000)))
        self.uptime[era] = start

    def ch_uptime(self, era: str) -> str:
        """The era's uptime field, advancing that era's simulated CH process."""
        if self.rng.random() < 1 / 4000:
            self._restart_ch(era)
        up = self.uptime[era]
        if up < 1_000_000_000:
            up += self.rng.randint(1, max(1_000, up // 4))
        else:
            up += self.rng.randint(10_000, 30_000_000)
        self.uptime[era] = up
        if era in (ERA_V012, ERA_V28, ERA_BARE):
            return rust_duration_debug(up)
        if era in (ERA_V32, ERA_V48):
            return rust_duration_debug(up, 6)
        return f"{f32(up / 1e9):>10.6f}s"

    def dmesg_stamp(self) -> str:
        self.dmesg_ns += self.rng.randint(1_000, 400_000_000)
        if self.rng.random() < 1 / 3000:
            self.dmesg_ns = self.rng.randint(0, 2_000_000_000)  # the guest rebooted
        sec, ns = divmod(self.dmesg_ns, 1_000_000_000)
        return f"[{sec:5d}.{ns // 1000:06d}]"

    def pid(self) -> int:
        return self.rng.randint(300, 4_000_000)

    def host(self) -> str:
        return self.rng.choice(HOSTS)

    # -- cloud-hypervisor logger -------------------------------------------------

    def ch(self, era: str, thread: str, level: str, loc: str, msg: str) -> Lines:
        """One CH logger record of ``era``, inside a randomly chosen wrapper."""
        ts = self.ch_uptime(era)
        if era == ERA_V012:
            head = f"cloud-hypervisor: {ts}: {level}:{loc}"
        elif era == ERA_BARE:
            head = f"cloud-hypervisor: {ts}:  {level}:{loc}"
        else:
            head = f"cloud-hypervisor: {ts}: <{thread}> {level}:{loc}"
        eol = "\r" if era in (ERA_V48, ERA_V49) else ""
        r = self.rng.random()
        if r < 0.55:
            return [f"{head} -- {msg}{eol}"]
        if r < 0.70:
            return [f"{self.rfc3339_ns()} {head} -- {msg}{eol}"]
        if r < 0.80:
            return self.vmsh_ch(head, msg, eol)
        if r < 0.90:
            w = self.wall
            return [f"{w.syslog} {self.host()} cloud-hypervisor[{self.pid()}]: {head} -- {msg}"]
        return [self.kata_console(f"{head} -- {msg}")]

    def vmsh_ch(self, head: str, msg: str, eol: str) -> Lines:
        """The user's vm.sh layout (corpus CH02): `` -- `` became a line break."""
        out = [f"{self.wall.vmsh} {head}"]
        cut = msg.find(": ", 10)
        if len(msg) > 72 and cut > 0:
            out += [VMSH_INDENT + msg[: cut + 1], VMSH_INDENT + msg[cut + 2 :]]
        else:
            out.append(VMSH_INDENT + msg)
        out[-1] += eol
        return out

    def vmsh_text(self, msg: str) -> Lines:
        """A non-logger message under vm.sh: long ones continue on indented lines."""
        first = f"{self.wall.vmsh} "
        cut = msg.rfind(": ", 0, 64)
        if len(msg) > 90 and cut > 0:
            return [first + msg[: cut + 1], VMSH_INDENT + msg[cut + 2 :]]
        return [first + msg]

    def kata_console(self, console: str) -> str:
        """A kata-runtime logfmt record carrying one guest-console line."""
        escaped = console.replace("\\", "\\\\").replace('"', '\\"')
        sandbox = f"{self.rng.getrandbits(256):064x}"
        line = (
            f'time="{self.rfc3339_ns()}" level=debug msg="reading guest console" '
            f"console-protocol=pty console-url=/dev/pts/0 name=containerd-shim-v2 "
            f"pid={self.pid()} sandbox={sandbox} source=virtcontainers subsystem=sandbox "
            f'vmconsole="{escaped}"'
        )
        if self.rng.random() < 0.5:
            return f"{self.wall.syslog} {self.host()} kata[{self.pid()}]: {line}"
        return line

    def wrap_text(self, msg: str) -> Lines:
        """A plain stderr line (ch-remote, VMM thread) as captured by some wrapper."""
        r = self.rng.random()
        if r < 0.5:
            return [msg]
        if r < 0.8:
            return [f"{self.rfc3339_ns()} {msg}"]
        return self.vmsh_text(msg)

    def ch_era(self, *eras: str) -> str:
        return self.rng.choice(eras or ERAS)

    # -- virtiofsd ---------------------------------------------------------------

    def rust_vfsd(self, level: str, target: str, msg: str) -> Lines:
        """A Rust virtiofsd record: env_logger, supervisord-prefixed, or ``--syslog``."""
        w = self.wall
        env = f"[{w.iso}Z {level:<5} {target}] {msg}"
        r = self.rng.random()
        if r < 0.45:
            return [env]
        if r < 0.6:
            return [f"{self.rng.choice(SUPERVISED[1:])} {env}"]
        if r < 0.7:
            unit = f"microvm-virtiofsd@guest{self.rng.randint(0, 9)}"
            prog = self.rng.choice(SUPERVISED[1:])
            return [f"{w.syslog} {self.host()} {unit}[{self.pid()}]: {prog} {env}"]
        if r < 0.8:
            return [f"{self.rfc3339_ns()} {env}"]
        pid = self.pid()
        if r < 0.88:
            return [f"{w.syslog} {self.host()} virtiofsd[{pid}]: {msg}"]
        if r < 0.95:
            h = self.host()
            return [f"{w.syslog} {h} virtiofsd[{pid + 3}]: {h} virtiofsd[{pid}]: {msg}"]
        return [f"virtiofsd[{pid}]: {msg}"]

    def c_vfsd(self, func_msg: str, debug_only: bool = False) -> Lines:
        """A C (QEMU) virtiofsd record: bare at info level, ``[ID: ]`` at debug level."""
        r = self.rng.random()
        tid = self.rng.choice((1, self.rng.randint(2, 99), self.rng.randint(100, 99999)))
        if r < 0.2 and not debug_only:
            return [func_msg]
        if r < 0.6:
            us = (self.wall_ns // 1000) % 1_000_000
            return [
                f"[{self.wall.date} {self.wall.clock}.{us:06d}+0000] [ID: {tid:08d}] {func_msg}"
            ]
        w = self.wall
        pid = self.pid()
        if r < 0.9:
            return [f"{w.syslog} {self.host()} virtiofsd[{pid}]: [ID: {tid:08d}] {func_msg}"]
        return [f"{w.syslog} {self.host()} virtiofsd[{pid}]: {func_msg}"]  # pre-QEMU-5.0

    def supervisord(self, text: str) -> Lines:
        w = self.wall
        ms = (self.wall_ns // 1_000_000) % 1000
        line = f"{w.date} {w.clock},{ms:03d} {text}"
        if self.rng.random() < 0.5:
            unit = f"microvm-virtiofsd@guest{self.rng.randint(0, 9)}"
            return [f"{w.syslog} {self.host()} {unit}[{self.pid()}]: {line}"]
        return [line]

    # -- guest ---------------------------------------------------------------------

    def guest(self, msg: str) -> Lines:
        stamp = self.dmesg_stamp()
        r = self.rng.random()
        if r < 0.6:
            return [f"{stamp} {msg}"]
        if r < 0.8:
            return [f"{self.wall.syslog} {self.host()} kernel: {msg}"]
        return [self.kata_console(f"{stamp} {msg}")]

    # -- filler ------------------------------------------------------------------

    def filler(self) -> Lines:
        """A noise record: never one of the healing-relevant messages."""
        r = self.rng.random()
        if r < 0.34:
            return self.filler_ch()
        if r < 0.60:
            return self.filler_rust_vfsd()
        if r < 0.78:
            return self.filler_c_vfsd()
        if r < 0.87:
            return self.guest(self.filler_dmesg())
        if r < 0.97:
            return [self.filler_syslog()]
        return self.wrap_text(self.rng.choice(WRAPPER_CHATTER))

    def filler_single(self) -> str:
        """One filler line that is always a single line (to end at exactly N lines)."""
        return f"{self.dmesg_stamp()} {self.filler_dmesg()}"

    def filler_ch(self) -> Lines:
        rng = self.rng
        era = self.ch_era()
        vcpu = f"vcpu{rng.randint(0, 3)}"
        r = rng.random()
        if r < 0.45:
            off = rng.choice((0x0, 0x10))
            if rng.random() < 0.5:
                return self.ch(
                    era, vcpu, "DEBUG", "devices/src/ioapic.rs:154", f"IOAPIC_R @ offset 0x{off:x}"
                )
            return self.ch(
                era, vcpu, "DEBUG", "devices/src/ioapic.rs:174", f"IOAPIC_W @ offset 0x{off:x}"
            )
        if r < 0.60:
            reg = rng.randint(0x10, 0x3F)
            val = rng.choice((0x10000, 0x1A031, 0x0, 0x10020))
            return self.ch(
                era,
                vcpu,
                "DEBUG",
                "devices/src/ioapic.rs:252",
                f"IOAPIC_W reg 0x{reg:x}, val 0x{val:x}",
            )
        if r < 0.72:
            addr = rng.randint(0xD0000000, 0xFEBFFFFF) & ~0x3
            size = rng.choice((1, 2, 4, 8))
            kind = rng.choice(("MMIO read", "MMIO write", "PIO read", "PIO write"))
            return self.ch(
                era,
                vcpu,
                "DEBUG",
                "hypervisor/src/kvm/mod.rs:2148",
                f"vCPU {vcpu[4:]} {kind} at 0x{addr:x} len {size}",
            )
        if r < 0.78:
            code = rng.randint(0, 0x40)
            secs = rng.randint(1000, 900_000) / 1e6
            return self.ch(
                era,
                "vmm",
                "DEBUG",
                "vmm/src/vm.rs:510",
                f"[Debug I/O port: Firmware code 0x{code:x}] {secs:.6f} seconds",
            )
        if r < 0.84:
            base = rng.randint(0x7F00_0000, 0xFFFF_0000) << 12
            size = rng.choice((0x40000000, 0x20000000, 0x10000000))
            return self.ch(
                era,
                "vmm",
                "INFO",
                "vmm/src/memory_manager.rs:1515",
                f"Anonymous mapping at 0x{base:x} (size = 0x{size:x})",
            )
        if r < 0.88:
            return self.ch(
                era,
                "vmm",
                "INFO",
                "vmm/src/memory_manager.rs:587",
                "create ram region for zone mem0, region_start: 0x40000000, "
                "region_size: 0x40000000",
            )
        if r < 0.92:
            return self.ch(
                era,
                "vmm",
                "INFO",
                "vmm/src/cpu.rs:972",
                f"Starting vCPU: cpu_id = {rng.randint(0, 7)}",
            )
        if r < 0.96:
            bdf = f"0000:00:{rng.randint(1, 31):02x}.0"
            return self.ch(
                era,
                "vmm",
                "DEBUG",
                "pci/src/bus.rs:178",
                f"PCI config write: {bdf} reg 0x{rng.randint(0, 63) * 4:x} "
                f"data 0x{rng.getrandbits(32):08x}",
            )
        return self.ch(
            era,
            "vmm",
            "WARN",
            "vmm/src/device_manager.rs:1854",
            "Ignoring error from setting up SIGWINCH listener: Invalid argument (os error 22)",
        )

    def filler_rust_vfsd(self) -> Lines:
        rng = self.rng
        r = rng.random()
        unique = self.unique = self.unique + rng.randint(1, 4)
        if r < 0.5:
            op, code = rng.choice(FS_OPS)
            msg = (
                f"Received request: opcode={op} ({code}), inode={rng.randint(1, 200_000)}, "
                f"unique={unique}, pid={rng.randint(1, 9000)}"
            )
            return self.rust_vfsd("DEBUG", "virtiofsd::server", msg)
        if r < 0.92:
            if rng.random() < 0.9:
                length = rng.choice((16, 32, 80, 96, 120, 144, 4112, 65552))
                header = f"OutHeader {{ len: {length}, error: 0, unique: {unique} }}"
                msg = f"Replying OK, header: {header}"
            else:
                err = rng.choice((-2, -9, -13, -38, -61))
                header = f"OutHeader {{ len: 16, error: {err}, unique: {unique} }}"
                msg = f"Replying ERROR, header: {header}"
            return self.rust_vfsd("DEBUG", "virtiofsd::server", msg)
        if r < 0.96:
            return self.rust_vfsd(
                "WARN",
                "virtiofsd::limits",
                "Failure when trying to set the limit to 1000000, the hard limit (131072) "
                "of open file descriptors is used instead.",
            )
        return self.rust_vfsd(
            "WARN",
            "virtiofsd::passthrough",
            'Filesystem mounted on "/" (mount ID: 137): Filesystem does not support file '
            "handles, falling back to O_PATH FDs",
        )

    def filler_c_vfsd(self) -> Lines:
        rng = self.rng
        q = rng.randint(0, 1)
        elem = rng.randint(0, 255)
        ino = rng.randint(1, 9999)
        unique = self.unique = self.unique + rng.randint(1, 4)
        msgs = (
            f"fv_queue_thread: Got queue event on Queue {q}",
            f"fv_queue_thread: Queue {q} gave evalue: 1 available: in: {rng.randint(16, 65552)} "
            f"out: {rng.choice((40, 72, 80, 96))}",
            f"fv_queue_thread: Waiting for Queue {q} event",
            f"fv_queue_worker: elem {elem}: with 2 out desc of length {rng.choice((72, 80))} "
            "bad_in_num=0 bad_out_num=0",
            f"unique: {unique}, opcode: READ (15), nodeid: {ino}, insize: 80, "
            f"pid: {rng.randint(1, 999)}",
            f"lo_read(ino={ino}, size={rng.choice((4096, 28672, 131072))}, "
            f"off={rng.randint(0, 999) * 4096})",
            f"virtio_send_data_iov: count=1 len={rng.randint(1, 131072)} iov_len=16",
            f"   unique: {unique}, success, outsize: {rng.choice((16, 32, 120, 144))}",
            "virtio_loop: Got VU event",
            "virtio_loop: Waiting for VU event",
        )
        return self.c_vfsd(rng.choice(msgs), debug_only=True)

    def filler_dmesg(self) -> str:
        rng = self.rng
        n = rng.randint(0, 9)
        msgs = (
            "EXT4-fs (vda1): mounted filesystem with ordered data mode. Opts: (null). "
            "Quota mode: none.",
            f"virtio_blk virtio{n}: [vda] 4194304 512-byte logical blocks (2.15 GB/2.00 GiB)",
            f"virtio_net virtio{n} enp0s{n + 3}: renamed from eth0",
            "random: crng init done",
            f"IPv6: ADDRCONF(NETDEV_CHANGE): enp0s{n + 3}: link becomes ready",
            f"audit: type=1400 audit({rng.randint(1_700_000_000, 1_800_000_000)}."
            f"{rng.randint(0, 999):03d}:{rng.randint(2, 400)}): "
            'apparmor="STATUS" operation="profile_load" profile="unconfined"',
            f"pci 0000:00:{n + 1:02x}.0: [1af4:1042] type 00 class 0x010000",
            f"systemd[1]: Started Session {rng.randint(1, 99)} of User root.",
        )
        return rng.choice(msgs)

    def filler_syslog(self) -> str:
        rng = self.rng
        w = self.wall
        h = self.host()
        pid = self.pid()
        r = rng.random()
        if r < 0.3:
            return (
                f"{w.syslog} {h} systemd[1]: Started Session {rng.randint(1, 9999)} of User root."
            )
        if r < 0.5:
            fp = "".join(
                rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
                for _ in range(43)
            )
            return (
                f"{w.syslog} {h} sshd[{pid}]: Accepted publickey for root from "
                f"192.0.2.{rng.randint(1, 254)} port {rng.randint(1024, 65535)} "
                f"ssh2: ED25519 SHA256:{fp}"
            )
        if r < 0.65:
            cmd = "command -v debian-sa1 > /dev/null && debian-sa1 1 1"
            return f"{w.syslog} {h} CRON[{pid}]: (root) CMD ({cmd})"
        if r < 0.8:
            cid = f"{rng.getrandbits(128):032x}" * 2
            return (
                f'{w.syslog} {h} containerd[{pid}]: time="{self.rfc3339_ns()}" level=info '
                'msg="loading plugin \\"io.containerd.event.v1.publisher\\"..." '
                f"runtime=io.containerd.runc.v2 id={cid}"
            )
        return (
            f"{w.syslog} {h} systemd-logind[{pid}]: New session {rng.randint(1, 9999)} of user dev."
        )


WRAPPER_CHATTER = (
    "cloud-hypervisor is ready",
    "VM Boot...",
    "VM Redirect output to /work/run/boot.log...",
    "VM Ready...",
    "Host kernel: Linux isam-reborn 5.4.209-1.el7.elrepo.x86_64 #1 SMP x86_64 Linux",
)

# -- healing-relevant records ------------------------------------------------------------

Maker = Callable[[MixedLog], tuple[Lines, str]]

CH_CONNECT_ERRORS = (
    "VhostUserProtocol(SocketConnect(Os { code: 111, kind: ConnectionRefused, "
    'message: "Connection refused" }))',
    "VhostUserProtocol(SocketConnect(Os { code: 2, kind: NotFound, "
    'message: "No such file or directory" }))',
)


def backend_connect_timeout(g: MixedLog) -> tuple[Lines, str]:
    err = g.rng.choice(CH_CONNECT_ERRORS)
    if g.rng.random() < 0.25:  # v52+: the socket path is in the message
        sock = g.rng.choice(SOCKETS)
        msg = f"Failed connecting the backend after trying for 1 minute for socket {sock}: {err}"
        loc = "virtio-devices/src/vhost_user/vu_common_ctrl.rs:462"
        return g.ch(ERA_V49, "vmm", "ERROR", loc, msg), "BackendConnectTimeout"
    msg = f"Failed connecting the backend after trying for 1 minute: {err}"
    loc = "virtio-devices/src/vhost_user/vu_common_ctrl.rs:410"
    era = g.ch_era(ERA_V28, ERA_V32, ERA_V48, ERA_V49, ERA_BARE)
    return g.ch(era, "vmm", "ERROR", loc, msg), "BackendConnectTimeout"


def backend_disconnected(g: MixedLog) -> tuple[Lines, str]:
    sock = g.rng.choice(SOCKETS)
    msg = f"vhost-user backend for socket {sock} disconnected, attempting reconnection"
    thread = f"_fs{g.rng.randint(0, 9)}"
    return g.ch(
        ERA_V49, thread, "INFO", "virtio-devices/src/vhost_user/mod.rs:393", msg
    ), "BackendDisconnected"


def fs_config(g: MixedLog, v52: bool) -> str:
    tag, sock, dev = g.rng.choice(TAGS), g.rng.choice(SOCKETS), f"_fs{g.rng.randint(0, 9)}"
    if v52:
        return (
            f'FsConfig {{ pci_common: PciDeviceCommonConfig {{ id: Some("{dev}"), pci_segment: 0, '
            f'iommu: false }}, tag: "{tag}", socket: "{sock}", num_queues: 1, queue_size: 1024 }}'
        )
    return (
        f'FsConfig {{ tag: "{tag}", socket: "{sock}", num_queues: 1, queue_size: 512, '
        f'id: Some("{dev}"), pci_segment: 0 }}'
    )


def fs_device_creating(g: MixedLog) -> tuple[Lines, str]:
    era = g.ch_era(ERA_V28, ERA_V32, ERA_V48, ERA_V49, ERA_BARE)
    cfg = fs_config(g, v52=era == ERA_V49 and g.rng.random() < 0.5)
    return g.ch(
        era, "vmm", "INFO", "vmm/src/device_manager.rs:2455", f"Creating virtio-fs device: {cfg}"
    ), "FsDeviceCreating"


def vm_reset(g: MixedLog) -> tuple[Lines, str]:
    return g.ch(g.ch_era(), "vmm", "INFO", "vmm/src/lib.rs:1730", "VM reset event"), "VmReset"


def api_request(g: MixedLog) -> tuple[Lines, str]:
    era = g.ch_era()
    if era in (ERA_V012, ERA_V28, ERA_BARE):
        req = g.rng.choice(
            ("VmReboot(Sender { .. })", "VmInfo(Sender { .. })", "VmmPing(Sender { .. })")
        )
        return g.ch(
            era, "vmm", "INFO", "vmm/src/lib.rs:1752", f"API request event: {req}"
        ), "ApiRequest"
    req = g.rng.choice(
        (
            "VmReboot",
            "VmInfo",
            "VmInfo",
            "VmmPing",
            "VmBoot",
            f"VmAddFs {fs_config(g, v52=era == ERA_V49)}",
            f'VmRemoveDevice VmRemoveDeviceData {{ id: "_fs{g.rng.randint(0, 9)}" }}',
        )
    )
    return g.ch(
        era, "vmm", "INFO", "vmm/src/api/mod.rs:914", f"API request event: {req}"
    ), "ApiRequest"


def add_fs_failed(g: MixedLog) -> tuple[Lines, str]:
    era = g.ch_era(ERA_V28, ERA_V32, ERA_V48, ERA_V49, ERA_BARE)
    err = g.rng.choice(
        (
            "DeviceManager(CreateVirtioFs(VhostUserConnect))",
            'DeviceManager(IdentifierNotUnique("_fs1"))',
        )
    )
    return g.ch(
        era, "vmm", "ERROR", "vmm/src/lib.rs:974", f"Error when adding new fs to the VM: {err}"
    ), "AddFsFailed"


def device_needs_reset(g: MixedLog) -> tuple[Lines, str]:
    dev = f"_fs{g.rng.randint(0, 9)}"
    err = g.rng.choice(
        (
            'HandleEvent(Custom { kind: Other, error: "vring worker failed" })',
            'QueueAddUsed(Os { code: 32, kind: BrokenPipe, message: "Broken pipe" })',
        )
    )
    msg = (
        f"Corrupted request detected ({dev}: worker exited with error: {err}). "
        "Setting device status to 'NEEDS_RESET' and stopping processing queues until reset."
    )
    return g.ch(ERA_V49, dev, "WARN", "virtio-devices/src/lib.rs:88", msg), "DeviceNeedsReset"


CHAINS = (
    (
        "Error booting VM",
        "The VM could not boot",
        "Error creating the virtio-fs device",
        "Cannot connect to the vhost-user backend",
    ),
    (
        "Error booting VM",
        "The VM could not boot",
        "Error manipulating firmware file",
        "No such file or directory (os error 2)",
    ),
    (
        "Error rebooting VM",
        "The VM could not reboot",
        "Error creating the virtio-fs device",
        "Connection refused (os error 111)",
    ),
)


def vmm_exited(g: MixedLog) -> tuple[Lines, str]:
    """The v48+ stderr chain: first line, numbered causes, blank line, Debug Info."""
    chain = g.rng.choice(CHAINS)
    lines = ["Error: Cloud Hypervisor exited with the following chain of errors:"]
    lines += [f"  {i}: {text}" for i, text in enumerate(chain)]
    verb = "VmBoot" if chain[0].startswith("Error booting") else "VmReboot"
    lines += ["", f"Debug Info: {verb}({verb}(DeviceManager(CreateVirtioFs(VhostUserConnect))))"]
    return lines, "VmmExited"


def vm_reboot_failed(g: MixedLog) -> tuple[Lines, str]:
    inner = g.rng.choice(
        (
            "DeviceManager(CreateVirtioFs(VhostUserConnect))",
            "DeviceManager(CreateVirtioFs(VhostUserCreateMaster(VhostUserProtocol("
            'SocketConnect(Os { code: 111, kind: ConnectionRefused, message: "Connection refused" '
            "})))))",
        )
    )
    if g.rng.random() < 0.8:
        return g.wrap_text(
            f"VMM thread exited with error: Error rebooting VM: {inner}"
        ), "VmRebootFailed"
    return g.wrap_text(f"Error rebooting VM: VmReboot({inner})"), "VmRebootFailed"


def api_unreachable(g: MixedLog) -> tuple[Lines, str]:
    err = g.rng.choice(
        ("Connection refused (os error 111)", "No such file or directory (os error 2)")
    )
    return g.wrap_text(f"Error running command: Error opening HTTP socket: {err}"), "ApiUnreachable"


def api_error(g: MixedLog) -> tuple[Lines, str]:
    if g.rng.random() < 0.6:
        body = g.rng.choice(
            (
                "VmReboot(DeviceManager(CreateVirtioFs(VhostUserConnect)))",
                "VmAddFs(DeviceManager(CreateVirtioFs(VhostUserConnect)))",
                'VmAddFs(DeviceManager(IdentifierNotUnique("_fs1")))',
            )
        )
        msg = f"Error running command: Server responded with an error: InternalServerError: {body}"
        return g.wrap_text(msg), "ApiError"
    lines = [
        "Error: ch-remote exited with the following chain of errors:",
        "  0: http client error",
        "  1: Server responded with InternalServerError",
        "  2: The VM could not reboot",
        "  3: Error creating the virtio-fs device",
        "",
        "Debug Info: HttpApiClient(ServerResponse(InternalServerError, "
        'Some("[\\"The VM could not reboot\\"]")))',
    ]
    return lines, "ApiError"


def event_monitor(g: MixedLog) -> tuple[Lines, str]:
    """One ``--event-monitor`` object, ``serde_json::to_string_pretty`` + ``"\\n\\n"``."""
    r = g.rng.random()
    props: list[tuple[str, str]] = []
    if r < 0.3:
        source, event, kind = "vm", "rebooting", "VmReset"
    elif r < 0.45:
        dev = g.rng.choice(("_fs0", "_fs3", "_disk0", "_net1"))
        source, event, kind = "vm", "device-removed", "DeviceRemoved"
        props = [("id", dev), ("bdf", f"0000:00:{g.rng.randint(1, 31):02x}.0")]
    else:
        source, event = g.rng.choice(
            (
                ("vmm", "starting"),
                ("vm", "booting"),
                ("vm", "booted"),
                ("vm", "rebooted"),
                ("vm", "shutdown"),
                ("vmm", "shutdown"),
                ("virtio-device", "activated"),
                ("virtio-device", "reset"),
            )
        )
        kind = "VmmLifecycle"
        if source == "virtio-device":
            props = [("id", g.rng.choice(("_fs0", "_disk0", "_net1", "__rng")))]
    up = g.uptime[ERA_V49]
    lines = [
        "{",
        '  "timestamp": {',
        f'    "secs": {up // 1_000_000_000},',
        f'    "nanos": {up % 1_000_000_000}',
        "  },",
        f'  "source": "{source}",',
        f'  "event": "{event}",',
    ]
    if props:
        lines.append('  "properties": {')
        lines += [
            f'    "{k}": "{v}"' + ("," if i < len(props) - 1 else "")
            for i, (k, v) in enumerate(props)
        ]
        lines.append("  }")
    else:
        lines.append('  "properties": null')
    lines += ["}", ""]
    return lines, kind


def event_mirror(g: MixedLog) -> tuple[Lines, str]:
    """v50+: every event-monitor event is also logged at INFO (corpus CH23)."""
    r = g.rng.random()
    if r < 0.3:
        msg, kind = "Event: source = vm event = rebooting", "VmReset"
    elif r < 0.45:
        dev = g.rng.choice(("_fs0", "_fs3"))
        msg, kind = (
            f"Event: source = vm event = device-removed id = {dev} bdf = 0000:00:05.0",
            "DeviceRemoved",
        )
    else:
        msg = g.rng.choice(
            (
                "Event: source = vm event = booted",
                "Event: source = vm event = rebooted",
                "Event: source = virtio-device event = activated id = _fs0",
            )
        )
        kind = "VmmLifecycle"
    return g.ch(ERA_V49, "vmm", "INFO", "event_monitor/src/lib.rs:114", msg), kind


def vfsd_listening(g: MixedLog) -> tuple[Lines, str]:
    if g.rng.random() < 0.3:
        return g.c_vfsd(
            "virtio_session_mount: Waiting for vhost-user socket connection..."
        ), "VirtiofsdListening"
    return g.rust_vfsd(
        "INFO", "virtiofsd", "Waiting for vhost-user socket connection..."
    ), "VirtiofsdListening"


def vfsd_connected(g: MixedLog) -> tuple[Lines, str]:
    if g.rng.random() < 0.2:
        return g.c_vfsd(
            "virtio_session_mount: Received vhost-user socket connection"
        ), "VirtiofsdClientConnected"
    return g.rust_vfsd(
        "INFO", "virtiofsd", "Client connected, servicing requests"
    ), "VirtiofsdClientConnected"


def vfsd_disconnected(g: MixedLog) -> tuple[Lines, str]:
    if g.rng.random() < 0.3:  # the C daemon's main loop ends when the front-end hangs up
        return g.c_vfsd("virtio_loop: Exit"), "VirtiofsdClientDisconnected"
    return g.rust_vfsd(
        "INFO", "virtiofsd", "Client disconnected, shutting down"
    ), "VirtiofsdClientDisconnected"


def vfsd_daemon_failed(g: MixedLog) -> tuple[Lines, str]:
    err = g.rng.choice(
        (
            "HandleRequest(InvalidMessage)",
            "HandleRequest(InvalidParam)",
            "HandleRequest(ReqHandlerError(Custom { kind: Other, error: SeekEnd(Os { code: 29, "
            'kind: NotSeekable, message: "Illegal seek" }) }))',
        )
    )
    return g.rust_vfsd(
        "ERROR", "virtiofsd", f"Waiting for daemon failed: {err}"
    ), "VirtiofsdDaemonFailed"


def vfsd_panicked(g: MixedLog) -> tuple[Lines, str]:
    """A Rust panic (1.73+ layout): location line, message line, backtrace note."""
    thread = g.rng.choice(("vring_worker", "main", "virtiofsd"))
    msg = g.rng.choice(
        (
            "called `Result::unwrap()` on an `Err` value: Os { code: 9, kind: Uncategorized, "
            'message: "Bad file descriptor" }',
            "index out of bounds: the len is 2 but the index is 2",
        )
    )
    line, col = g.rng.randint(200, 990), g.rng.randint(5, 60)
    lines = [
        f"thread '{thread}' panicked at src/main.rs:{line}:{col}:",
        msg,
        "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
    ]
    if g.rng.random() < 0.4:
        prefix = f"{g.rfc3339_ns()} "
        lines = [prefix + line for line in lines]
    return lines, "VirtiofsdPanicked"


def vfsd_exited(g: MixedLog) -> tuple[Lines, str]:
    name = g.rng.choice(SUPERVISED)
    status = g.rng.choice(
        ("exit status 1; not expected", "exit status 0; expected", "exit status 101; not expected")
    )
    return g.supervisord(f"INFO exited: {name} ({status})"), "VirtiofsdExited"


def guest_tag_not_found(g: MixedLog) -> tuple[Lines, str]:
    return g.guest(f"virtio-fs: tag <{g.rng.choice(TAGS)}> not found"), "GuestTagNotFound"


def guest_mount_failed(g: MixedLog) -> tuple[Lines, str]:
    tag = g.rng.choice(TAGS)
    mnt = g.rng.choice(("/mnt", f"/home/dev/{tag}", "/mnt/docker"))
    if g.rng.random() < 0.7:
        first = (
            f"mount: {mnt}: wrong fs type, bad option, bad superblock on {tag}, missing codepage "
            "or helper program, or other error."
        )
    else:
        first = f"mount: {mnt}: unknown filesystem type 'virtiofs'."
    second = "       dmesg(1) may have more information after failed mount system call."
    if g.rng.random() < 0.5:
        head = f"{g.wall.syslog} {g.host()} mount[{g.pid()}]: "
        return [head + first, head + second], "GuestMountFailed"
    return [first, second], "GuestMountFailed"


def guest_reboot(g: MixedLog) -> tuple[Lines, str]:
    return g.guest(
        g.rng.choice(("reboot: Restarting system", "reboot: machine restart"))
    ), "GuestReboot"


RELEVANT: tuple[tuple[Maker, int], ...] = (
    (backend_connect_timeout, 6),
    (backend_disconnected, 4),
    (fs_device_creating, 10),
    (vm_reset, 5),
    (api_request, 12),
    (add_fs_failed, 3),
    (device_needs_reset, 2),
    (vmm_exited, 2),
    (vm_reboot_failed, 2),
    (api_unreachable, 3),
    (api_error, 3),
    (event_monitor, 6),
    (event_mirror, 3),
    (vfsd_listening, 10),
    (vfsd_connected, 10),
    (vfsd_disconnected, 9),
    (vfsd_daemon_failed, 2),
    (vfsd_panicked, 1),
    (vfsd_exited, 4),
    (guest_tag_not_found, 3),
    (guest_mount_failed, 2),
    (guest_reboot, 3),
)
"""Relevant record makers and their relative weights (lifecycle common, failures rare)."""


def generate(out: TextIO, n_lines: int, seed: int, relevant_rate: float) -> dict[str, object]:
    """Write exactly ``n_lines`` lines to ``out``; return the ground truth."""
    rng = random.Random(seed)
    g = MixedLog(rng)
    makers = [m for m, _ in RELEVANT]
    weights = [w for _, w in RELEVANT]
    kinds = dict.fromkeys(KINDS, 0)
    written = 0
    records = 0
    buf: list[str] = []
    while written < n_lines:
        g.tick()
        left = n_lines - written
        kind: str | None = None
        if rng.random() < relevant_rate:
            lines, kind = rng.choices(makers, weights)[0](g)
        else:
            lines = g.filler()
        if len(lines) > left:  # never cut a record: finish with one-line filler
            lines, kind = [g.filler_single()], None
        if kind is not None:
            kinds[kind] += 1
            records += 1
        buf.extend(lines)
        written += len(lines)
        if len(buf) >= 4096:
            out.write("\n".join(buf) + "\n")
            buf.clear()
    if buf:
        out.write("\n".join(buf) + "\n")
    return {"lines": n_lines, "relevant_records": records, "kinds": kinds}


def truth_path(out: Path) -> Path:
    """Where the ground truth for ``out`` is written."""
    return out.with_name(out.name + ".truth.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("n", type=int, metavar="N", help="number of lines to write")
    parser.add_argument("out", type=Path, metavar="OUT", help="log file to write")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument(
        "--relevant-rate", type=float, default=0.01, help="share of records that are relevant"
    )
    args = parser.parse_args(argv)
    if args.n < 0 or not 0.0 <= args.relevant_rate <= 1.0:
        parser.error("N must be >= 0 and --relevant-rate within [0, 1]")
    with args.out.open("w", encoding="utf-8", newline="") as fh:
        truth = generate(fh, args.n, args.seed, args.relevant_rate)
    truth_path(args.out).write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
