"""Logs shaped like deployments the first generator does not imitate, for the replay benchmark.

``gen_mixed_log.py`` mixes every format in one file at about 1 % events, with noise
that never names the programs healer watches. Real logs are rarely like that: a
virtiofsd at ``--log-level debug`` writes a line per FUSE request; cloud-hypervisor at
``-vv`` talks about vhost-user all the time; a Kata host's journal names virtiofsd in
every other record. Those near misses (lines that name virtiofsd, vhost-user, errors
or resets without being an event) are what a prefilter pays for, so each shape here
is dense in them. This generator shares no code with the first one: its chatter, its
clocks and its event texts are written here, from the formats in
``../shared/reference/log-formats.md`` and the real corpus.

Shapes (``--shape``):

- ``vfsd-debug``: the Rust virtiofsd at debug level (one ``Received request`` and one
  ``Replying`` line per FUSE request, some of them errors) and the C virtiofsd with
  ``-d`` (queue, request, ``lo_*`` and indented reply lines), with the daemon's
  lifecycle, failures and supervisord's exits among them.
- ``ch-verbose``: cloud-hypervisor v49+ with ``-vv`` (device creation, vhost-user
  protocol negotiation, virtio-fs pause/resume, PCI config writes, IOAPIC and vCPU
  lines), bare or docker-stamped, with backend, device and API events among them.
- ``kata-journald``: a Kata host's journal in ``short-iso`` (kata-runtime and
  containerd logfmt records naming virtiofsd and vhost-user, the C virtiofsd through
  syslog, guest console lines in ``vmconsole="..."``), with its exits and resets.
- ``worst``: lines that cost the most per line: runs of thousands of non-space
  characters, deeply nested event-monitor JSON, Rust error chains nested 40 deep,
  long lines that name a needle without being an event.

Deterministic: one ``random.Random(seed)``; the same arguments give the same bytes.
The ground truth, counted as each event is written, goes to ``OUT.truth.json``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

__all__ = ["SHAPES", "generate", "truth_path"]

Lines = list[str]
BASE = 1_733_300_000  # 2024-12-04T08:13:20Z, the simulated wall clock's start
OPS = (
    ("Lookup", 1),
    ("Getattr", 3),
    ("Open", 14),
    ("Read", 15),
    ("Release", 18),
    ("Flush", 25),
    ("Readdirplus", 44),
    ("Getxattr", 22),
    ("Statfs", 17),
    ("Forget", 2),
)
ERRNOS = ((-2, "No such file or directory"), (-61, "No data available"), (-13, "Permission denied"))
NAMES = ("etc", "usr", "lib", "home", "passwd", "ld.so.cache", "libc.so.6", ".git", "README")
TAGS = ("myfs", "kataShared", "hostshare", "data0")
SOCKETS = ("/run/vfsd/fs0.sock", "/var/run/kata/vhost-fs.sock", "/tmp/vfsd.sock")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class Clock:
    """A wall clock in nanoseconds and a VMM uptime, both advancing per record."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.ns = BASE * 1_000_000_000
        self.up_ns = 2_500_000_000

    def step(self) -> None:
        d = self.rng.randint(20_000, 1_500_000)
        self.ns += d
        self.up_ns += d

    def iso(self) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(self.ns // 1_000_000_000))

    def nanos(self) -> str:
        return f"{self.iso()}.{self.ns % 1_000_000_000:09d}Z"

    def micros(self) -> str:
        return f"{self.iso()}.{self.ns % 1_000_000_000 // 1000:06d}"

    def syslog(self) -> str:
        t = time.gmtime(self.ns // 1_000_000_000)
        return (
            f"{MONTHS[t.tm_mon - 1]} {t.tm_mday:02d} {t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
        )

    def uptime(self) -> str:
        return f"{self.up_ns / 1e9:>10.6f}s"


class Shape:
    """One shape: chatter lines and event makers sharing a clock and an RNG."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.clock = Clock(rng)
        self.unique = 2

    def chatter(self) -> Lines:
        raise NotImplementedError

    def events(self) -> list[tuple[Callable[[], tuple[Lines, str]], int]]:
        raise NotImplementedError

    def pick(self, items: tuple[str, ...]) -> str:
        return self.rng.choice(items)


class VfsdDebug(Shape):
    """virtiofsd at debug level, Rust and C, as a supervisor or a shell captured it."""

    def rust(self, level: str, target: str, msg: str) -> str:
        return f"[{self.clock.iso()}Z {level:<5} {target}] {msg}"

    def c(self, msg: str) -> str:
        tid = self.rng.choice((1, 3, 6, 67, 4122))
        return f"[{self.clock.micros()}+0000] [ID: {tid:08d}] {msg}"

    def chatter(self) -> Lines:
        self.unique += 2
        op, code = self.rng.choice(OPS)
        u = self.unique
        if self.rng.random() < 0.6:
            out = [
                self.rust(
                    "DEBUG",
                    "virtiofsd::server",
                    f"Received request: opcode={op} ({code}), inode={self.rng.randint(1, 9000)}, "
                    f"unique={u}, pid={self.rng.randint(1, 4000)}",
                )
            ]
            if self.rng.random() < 0.1:
                err, _ = self.rng.choice(ERRNOS)
                reply = (
                    f"Replying ERROR, header: OutHeader {{ len: 16, error: {err}, unique: {u} }}"
                )
            else:
                reply = (
                    f"Replying OK, header: OutHeader {{ len: {self.rng.randint(16, 4096)}, "
                    f"error: 0, unique: {u} }}"
                )
            out.append(self.rust("DEBUG", "virtiofsd::server", reply))
            if self.rng.random() < 0.03:
                out.append(
                    self.rust(
                        "DEBUG",
                        "vhost_user_backend::handler",
                        f"set_vring_num: index {self.rng.randint(0, 1)}, num 1024 "
                        "(vhost-user front-end request)",
                    )
                )
            return out
        name = self.pick(NAMES)
        out = [
            self.c(f"fv_queue_thread: Got queue event on Queue {self.rng.randint(1, 2)}"),
            self.c(
                f"unique: {u}, opcode: {op.upper()} ({code}), nodeid: "
                f"{self.rng.randint(1, 900)}, insize: 56, pid: {self.rng.randint(1, 4000)}"
            ),
            self.c(f"lo_{op.lower()}(parent=1, name={name})"),
        ]
        if self.rng.random() < 0.12:
            err, text = self.rng.choice(ERRNOS)
            out.append(f"   unique: {u}, error: {err} ({text}), outsize: 16")
        else:
            out.append(f"   unique: {u}, success, outsize: {self.rng.randint(16, 4096)}")
        return out

    def listening(self) -> tuple[Lines, str]:
        if self.rng.random() < 0.5:
            msg = "Waiting for vhost-user socket connection..."
            return [self.rust("INFO", "virtiofsd", msg)], "VirtiofsdListening"
        return [
            self.c("virtio_session_mount: Waiting for vhost-user socket connection...")
        ], "VirtiofsdListening"

    def connected(self) -> tuple[Lines, str]:
        if self.rng.random() < 0.5:
            msg = "Client connected, servicing requests"
            return [self.rust("INFO", "virtiofsd", msg)], "VirtiofsdClientConnected"
        return [
            self.c("virtio_session_mount: Received vhost-user socket connection")
        ], "VirtiofsdClientConnected"

    def disconnected(self) -> tuple[Lines, str]:
        if self.rng.random() < 0.5:
            msg = "Client disconnected, shutting down"
            return [self.rust("INFO", "virtiofsd", msg)], "VirtiofsdClientDisconnected"
        return [self.c("virtio_loop: Exit")], "VirtiofsdClientDisconnected"

    def failed(self) -> tuple[Lines, str]:
        msg = "Waiting for daemon failed: HandleRequest(InvalidMessage)"
        return [self.rust("ERROR", "virtiofsd", msg)], "VirtiofsdDaemonFailed"

    def panicked(self) -> tuple[Lines, str]:
        return [
            f"thread 'vring_worker' panicked at src/server.rs:{self.rng.randint(100, 999)}:9:",
            "called `Option::unwrap()` on a `None` value",
            "note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace",
        ], "VirtiofsdPanicked"

    def exited(self) -> tuple[Lines, str]:
        ms = self.clock.ns // 1_000_000 % 1000
        stamp = f"{self.clock.iso().replace('T', ' ')},{ms:03d}"
        status = self.pick(("exit status 101; not expected", "exit status 0; expected"))
        return [f"{stamp} INFO exited: virtiofsd ({status})"], "VirtiofsdExited"

    def events(self) -> list[tuple[Callable[[], tuple[Lines, str]], int]]:
        return [
            (self.listening, 10),
            (self.connected, 10),
            (self.disconnected, 8),
            (self.failed, 2),
            (self.panicked, 1),
            (self.exited, 4),
        ]


class ChVerbose(Shape):
    """cloud-hypervisor v49+ at ``-vv``: its own words about devices and vhost-user."""

    def ch(self, thread: str, level: str, loc: str, msg: str) -> Lines:
        line = f"cloud-hypervisor: {self.clock.uptime()}: <{thread}> {level}:{loc} -- {msg}"
        if self.rng.random() < 0.45:
            line = f"{self.clock.nanos()} {line}"
        return [line]

    def chatter(self) -> Lines:
        r = self.rng.random()
        dev = f"_fs{self.rng.randint(0, 3)}"
        if r < 0.25:
            addr = self.rng.randint(0, 0xFFFF)
            return self.ch(
                f"vcpu{self.rng.randint(0, 3)}",
                "DEBUG",
                "devices/src/ioapic.rs:237",
                f"IOAPIC_W @ offset 0x{addr:x}",
            )
        if r < 0.45:
            return self.ch(
                dev,
                "DEBUG",
                "virtio-devices/src/transport/pci_common_config.rs:196",
                f"write_common_config_word: offset 0x{self.rng.randint(0, 0x3F):x}",
            )
        if r < 0.60:
            feature = self.pick(("MQ", "REPLY_ACK", "SLAVE_REQ", "CONFIGURE_MEM_SLOTS"))
            return self.ch(
                dev,
                "DEBUG",
                "virtio-devices/src/vhost_user/vu_common_ctrl.rs:118",
                f"vhost-user backend supports protocol feature {feature}, "
                f"acked 0x{self.rng.getrandbits(32):08x}",
            )
        if r < 0.70:
            return self.ch(
                "vmm",
                "INFO",
                "virtio-devices/src/device.rs:356",
                self.pick(("Resuming virtio-fs", "Pausing virtio-fs")),
            )
        if r < 0.80:
            return self.ch(
                "vmm",
                "INFO",
                "vmm/src/device_manager.rs:2512",
                f"Creating vhost-user-net device: VhostUserConfig {{ socket: "
                f'"/run/vhu-net{self.rng.randint(0, 3)}.sock", num_queues: 2, queue_size: 256 }}',
            )
        if r < 0.88:
            return self.ch(
                dev,
                "INFO",
                "virtio-devices/src/transport/pci_device.rs:1053",
                f"Resetting virtio device {dev} (driver wrote status 0)",
            )
        if r < 0.94:
            return self.ch(
                "vmm",
                "DEBUG",
                "vmm/src/api/http/mod.rs:372",
                f"HTTP request GET /api/v1/vm.info from the vhost-user-fs health check "
                f"{self.rng.randint(1, 99999)}",
            )
        return self.ch(
            "vmm",
            "DEBUG",
            "vmm/src/memory_manager.rs:1504",
            f"Sharing memory region 0x{self.rng.getrandbits(40):x} with the vhost-user backend",
        )

    def disconnected(self) -> tuple[Lines, str]:
        sock = self.pick(SOCKETS)
        msg = f"vhost-user backend for socket {sock} disconnected, attempting reconnection"
        dev = f"_fs{self.rng.randint(0, 3)}"
        return self.ch(dev, "INFO", "virtio-devices/src/vhost_user/mod.rs:393", msg), (
            "BackendDisconnected"
        )

    def timeout(self) -> tuple[Lines, str]:
        msg = (
            f"Failed connecting the backend after trying for 1 minute for socket "
            f"{self.pick(SOCKETS)}: VhostUserProtocol(SocketConnect(Os {{ code: 111, "
            'kind: ConnectionRefused, message: "Connection refused" }))'
        )
        loc = "virtio-devices/src/vhost_user/vu_common_ctrl.rs:462"
        return self.ch("vmm", "ERROR", loc, msg), "BackendConnectTimeout"

    def creating(self) -> tuple[Lines, str]:
        dev = f"_fs{self.rng.randint(0, 3)}"
        cfg = (
            f'FsConfig {{ pci_common: PciDeviceCommonConfig {{ id: Some("{dev}"), '
            f'pci_segment: 0, iommu: false }}, tag: "{self.pick(TAGS)}", '
            f'socket: "{self.pick(SOCKETS)}", num_queues: 1, queue_size: 1024 }}'
        )
        loc = "vmm/src/device_manager.rs:2455"
        return self.ch("vmm", "INFO", loc, f"Creating virtio-fs device: {cfg}"), "FsDeviceCreating"

    def reset(self) -> tuple[Lines, str]:
        return self.ch("vmm", "INFO", "vmm/src/lib.rs:1730", "VM reset event"), "VmReset"

    def api(self) -> tuple[Lines, str]:
        req = self.pick(("VmInfo", "VmReboot", "VmmPing", "VmCounters"))
        return self.ch("vmm", "INFO", "vmm/src/api/mod.rs:914", f"API request event: {req}"), (
            "ApiRequest"
        )

    def needs_reset(self) -> tuple[Lines, str]:
        dev = f"_fs{self.rng.randint(0, 3)}"
        msg = (
            f"Corrupted request detected ({dev}: worker exited with error: HandleEvent(Custom "
            '{ kind: Other, error: "vring worker failed" })). Setting device status to '
            "'NEEDS_RESET' and stopping processing queues until reset."
        )
        return self.ch(dev, "WARN", "virtio-devices/src/lib.rs:88", msg), "DeviceNeedsReset"

    def mirror(self) -> tuple[Lines, str]:
        if self.rng.random() < 0.3:
            msg, kind = (
                f"Event: source = vm event = device-removed id = _fs{self.rng.randint(0, 3)}",
                ("DeviceRemoved"),
            )
        else:
            msg, kind = "Event: source = virtio-device event = activated id = _fs0", "VmmLifecycle"
        return self.ch("vmm", "INFO", "event_monitor/src/lib.rs:114", msg), kind

    def events(self) -> list[tuple[Callable[[], tuple[Lines, str]], int]]:
        return [
            (self.disconnected, 5),
            (self.timeout, 3),
            (self.creating, 6),
            (self.reset, 4),
            (self.api, 12),
            (self.needs_reset, 2),
            (self.mirror, 4),
        ]


class KataJournald(Shape):
    """A Kata host's journal, ``journalctl -o short-iso``: the runtime names virtiofsd a lot."""

    def head(self, program: str, pid: int) -> str:
        return f"{self.clock.iso()}+0000 node{self.rng.randint(1, 3)} {program}[{pid}]: "

    def logfmt(self, level: str, msg: str, subsystem: str, extra: str = "") -> str:
        sandbox = f"{self.rng.getrandbits(128):032x}"
        return (
            self.head("kata", 11764)
            + f'time="{self.clock.nanos()}" level={level} msg="{msg}" name=containerd-shim-v2 '
            f"pid=11764 sandbox={sandbox} source=virtcontainers{extra} subsystem={subsystem}"
        )

    def console(self, text: str) -> str:
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        return self.logfmt("debug", "reading guest console", "sandbox") + f' vmconsole="{escaped}"'

    def chatter(self) -> Lines:
        r = self.rng.random()
        if r < 0.25:
            stamp = f"[{self.clock.up_ns / 1e9:12.6f}]"
            text = self.pick(
                (
                    "virtio-pci 0000:00:03.0: enabling device (0000 -> 0003)",
                    "virtiofs virtio1: virtio_fs_setup_dax: No cache capability",
                    "EXT4-fs (vda1): mounted filesystem with ordered data mode",
                    "random: crng init done",
                )
            )
            return [self.console(f"{stamp} {text}")]
        if r < 0.45:
            msg = self.pick(
                (
                    "Starting virtiofsd",
                    "virtiofsd args: --syslog --cache=auto --thread-pool-size=1",
                    "Adding vhost-user-fs device to the VM",
                    "vhost-user socket of virtiofsd is ready",
                    "Stopping virtiofsd is not needed: the VM owns it",
                )
            )
            return [self.logfmt("info", msg, "virtiofsd", "/hypervisor")]
        if r < 0.65:
            msg = self.pick(
                (
                    "sending request",
                    "request end",
                    "Get sandbox stats",
                    "Requesting the virtiofsd pid from the hypervisor",
                )
            )
            return [self.logfmt("debug", msg, "kata_agent", "/agent")]
        if r < 0.80:
            return [
                self.head("containerd", 912)
                + f'time="{self.clock.nanos()}" level=info msg="loading plugin '
                f'\\"io.containerd.vhost-user.v1\\"..." type=io.containerd.snapshotter.v1'
            ]
        if r < 0.92:
            tid = self.rng.choice((1, 3, 6))
            text = self.pick(
                (
                    "fv_queue_thread: Got queue event on Queue 1",
                    "fv_queue_thread: kill event on queue 0 - quitting",
                    "virtio_loop: Stopping queue 1 thread",
                    "fv_queue_set_started: qidx=1 started=1",
                )
            )
            return [self.head("virtiofsd", 184280) + f"[ID: {tid:08d}] {text}"]
        return [
            self.head("systemd", 1)
            + self.pick(
                (
                    "Started kata-containers virtiofsd helper scope.",
                    "run-containerd-io.containerd.runtime.v2.task-k8s.io-rootfs.mount: Succeeded.",
                )
            )
        ]

    def quits(self) -> tuple[Lines, str]:
        return [
            self.logfmt("info", "virtiofsd quits", "virtiofsd", "/hypervisor")
        ], "VirtiofsdExited"

    def had_stopped(self) -> tuple[Lines, str]:
        return [self.logfmt("warning", "The virtiofsd had stopped", "qemu")], "VirtiofsdExited"

    def listening(self) -> tuple[Lines, str]:
        text = "[ID: 00184280] virtio_session_mount: Waiting for vhost-user socket connection..."
        return [self.head("virtiofsd", 184280) + text], "VirtiofsdListening"

    def loop_exit(self) -> tuple[Lines, str]:
        return [self.head("virtiofsd", 184280) + "[ID: 00000001] virtio_loop: Exit"], (
            "VirtiofsdClientDisconnected"
        )

    def tag_missing(self) -> tuple[Lines, str]:
        stamp = f"[{self.clock.up_ns / 1e9:12.6f}]"
        text = f"{stamp} virtio-fs: tag <{self.pick(TAGS)}> not found"
        return [self.console(text)], "GuestTagNotFound"

    def vm_reset(self) -> tuple[Lines, str]:
        head = f"cloud-hypervisor: {self.clock.uptime()}: <vmm> INFO:vmm/src/lib.rs:1730"
        text = f"{head} -- VM reset event"
        return [self.console(text)], "VmReset"

    def events(self) -> list[tuple[Callable[[], tuple[Lines, str]], int]]:
        return [
            (self.quits, 4),
            (self.had_stopped, 2),
            (self.listening, 6),
            (self.loop_exit, 5),
            (self.tag_missing, 3),
            (self.vm_reset, 3),
        ]


class Worst(Shape):
    """The lines that cost the most: long, deep, nested, and naming a needle."""

    def blob(self, n: int) -> str:
        return "".join(
            self.rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdef0123456789+/") for _ in range(n)
        )

    def chatter(self) -> Lines:
        r = self.rng.random()
        if r < 0.3:  # a long run of non-spaces after a needle, not an event
            return [
                f"[{self.clock.iso()}Z DEBUG virtiofsd::server] Error-free reply payload: "
                + self.blob(self.rng.randint(1000, 4000))
            ]
        if r < 0.55:  # a long line naming vhost-user and reset, no event
            words = " ".join(
                self.pick(("vhost-user", "reset", "Failed", "Client", "exited")) for _ in range(150)
            )
            return [f"cloud-hypervisor: {self.clock.uptime()}: <vmm> DEBUG:x.rs:1 -- {words}"]
        if r < 0.75:  # a deep JSON line a program logged
            depth = self.rng.randint(50, 200)
            return ['{"id":"' + "x" + '","nested":' + "[" * depth + "]" * depth + "}"]
        return [f"plain noise {self.blob(120)}"]

    def chain(self) -> tuple[Lines, str]:
        inner = 'Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }'
        for name in ("SocketConnect", "VhostUserProtocol", "VhostUserCreateMaster") * 13:
            inner = f"{name}({inner})"
        msg = f"Failed connecting the backend after trying for 1 minute: {inner}"
        loc = "virtio-devices/src/vhost_user/vu_common_ctrl.rs:410"
        line = f"cloud-hypervisor: {self.clock.uptime()}: <vmm> ERROR:{loc} -- {msg}"
        return [line], "BackendConnectTimeout"

    def long_config(self) -> tuple[Lines, str]:
        cfg = (
            f'FsConfig {{ tag: "{self.blob(self.rng.randint(500, 2000))}", socket: '
            f'"/run/vfsd/fs0.sock", num_queues: 1, queue_size: 1024, id: Some("_fs0"), '
            "pci_segment: 0 }"
        )
        line = (
            f"cloud-hypervisor: {self.clock.uptime()}: <vmm> INFO:vmm/src/device_manager.rs:2455"
            f" -- Creating virtio-fs device: {cfg}"
        )
        return [line], "FsDeviceCreating"

    def deep_monitor(self) -> tuple[Lines, str]:
        depth = self.rng.randint(20, 60)
        up = self.clock.up_ns
        nested = '{"a": ' * depth + "null" + "}" * depth
        return [
            "{",
            '  "timestamp": {',
            f'    "secs": {up // 1_000_000_000},',
            f'    "nanos": {up % 1_000_000_000}',
            "  },",
            '  "source": "vm",',
            '  "event": "rebooting",',
            f'  "properties": {{"detail": {nested}}}',
            "}",
            "",
        ], "VmReset"

    def events(self) -> list[tuple[Callable[[], tuple[Lines, str]], int]]:
        return [(self.chain, 4), (self.long_config, 3), (self.deep_monitor, 2)]


SHAPES: dict[str, type[Shape]] = {
    "vfsd-debug": VfsdDebug,
    "ch-verbose": ChVerbose,
    "kata-journald": KataJournald,
    "worst": Worst,
}


def generate(
    out: TextIO, shape: str, n_lines: int, seed: int, event_rate: float = 0.01
) -> dict[str, object]:
    """Write exactly ``n_lines`` lines of ``shape`` to ``out``; return the ground truth."""
    rng = random.Random(seed)
    g = SHAPES[shape](rng)
    makers = g.events()
    weights = [w for _, w in makers]
    kinds: dict[str, int] = {}
    written = records = 0
    buf: list[str] = []
    while written < n_lines:
        g.clock.step()
        kind = None
        if rng.random() < event_rate:
            lines, kind = rng.choices(makers, weights)[0][0]()
        else:
            lines = g.chatter()
        if len(lines) > n_lines - written:  # never cut a record
            lines, kind = [f"filler line {written}"], None
        if kind is not None:
            kinds[kind] = kinds.get(kind, 0) + 1
            records += 1
        buf.extend(lines)
        written += len(lines)
        if len(buf) >= 4096:
            out.write("\n".join(buf) + "\n")
            buf.clear()
    if buf:
        out.write("\n".join(buf) + "\n")
    return {"shape": shape, "lines": n_lines, "relevant_records": records, "kinds": kinds}


def truth_path(out: Path) -> Path:
    return out.with_name(out.name + ".truth.json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("shape", choices=sorted(SHAPES))
    parser.add_argument("lines", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--event-rate", type=float, default=0.01)
    args = parser.parse_args(argv)
    with args.out.open("w", encoding="utf-8", newline="") as fh:
        truth = generate(fh, args.shape, args.lines, args.seed, args.event_rate)
    truth_path(args.out).write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(truth["kinds"], sort_keys=True), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
