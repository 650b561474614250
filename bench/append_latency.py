"""Log line appended -> reaction, for ``healer watch``, SEC and mtail tailing a log.

The peers run in the same invocation on the same lines. Each sample appends one
cloud-hypervisor connect-timeout line to a tailed log with ``os.write`` on an
O_APPEND fd, then waits for the reaction: for healer its event in the journal (the
runner journals an event and decides on it in one step; the line names the configured
share's socket, since a tailed log decides about configured shares only, docs/trust.md,
so samples after the first are one incident and decide nothing new), for SEC the line
its rule's ``write`` action appends to a file (a new socket path each time), for mtail
its counter on ``/metrics``. Each is read every millisecond, which adds its own small
delay.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
from _healer import (
    add_peer_arguments,
    healer_watch,
    sec_is_missing,
    watcher_label,
    watcher_lines,
)

ROOT = Path(__file__).resolve().parent.parent
LIMIT_S = 30.0


def failure_line(n: int, socket: str | None = None) -> bytes:
    """A connect-timeout line about ``socket`` (default: a socket of its own)."""
    return (
        "cloud-hypervisor:  70.500000s: <vmm> ERROR:virtio-devices/src/vhost_user/"
        "vu_common_ctrl.rs:462 -- Failed connecting the backend after trying for 1 "
        f"minute for socket {socket or f'/run/bench{n}.sock'}: VhostUserProtocol(SocketConnect("
        'Os { code: 111, kind: ConnectionRefused, message: "Connection refused" }))\r\n'
    ).encode()


def event_lines(journal: Path, seen: dict[Path, int]) -> set[int]:
    """Lines of the connect-timeout events journaled since last time."""
    lines = set()
    for segment in sorted(journal.glob("segment-*")):
        with segment.open("rb") as file:
            file.seek(seen.get(segment, 0))
            data = file.read()
        end = data.rfind(b"\n") + 1
        seen[segment] = seen.get(segment, 0) + end
        for line in data[:end].splitlines():
            record = orjson.loads(line)
            event = record.get("event") if record.get("type") == "event" else None
            if event and event.get("kind") == "BackendConnectTimeout":
                lines.add(int(event["line"]))
    return lines


def measure(
    log: Path,
    samples: int,
    rng: random.Random,
    reacted: Callable[[int], bool],
    socket: str | None = None,
) -> list[float]:
    """Append one line per sample (random pauses), time until ``reacted(n)``."""
    latencies = []
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        for n in range(samples):
            time.sleep(rng.uniform(0.1, 0.5))
            start = time.perf_counter()
            os.write(fd, failure_line(n, socket))
            deadline = time.monotonic() + LIMIT_S
            while not reacted(n):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no reaction to sample {n}")
                time.sleep(0.001)
            latencies.append(time.perf_counter() - start)
    finally:
        os.close(fd)
    return latencies


def run_healer(work: Path, samples: int, rng: random.Random, notify: str) -> list[float]:
    """``notify`` is "inotify" or a watchfiles step in ms."""
    (work / "shared").mkdir()
    log = work / "ch.log"
    log.write_text("")
    config = work / "healer.toml"
    config.write_text(
        f'[healer]\njournal = "{work / "journal"}"\nrules = "{ROOT / "rules"}"\n'
        f"{watcher_lines(notify)}\n"
        f'[[share]]\nname = "fs0"\nsocket = "{work / "fs0.sock"}"\n'
        f'shared_dir = "{work / "shared"}"\n\n[[source]]\npath = "{log}"\n'
    )
    with healer_watch(config, (work / "fs0.sock").exists, limit_s=LIMIT_S):
        time.sleep(2.0)
        seen: dict[Path, int] = {}
        lines = event_lines(work / "journal", seen)

        def reacted(n: int) -> bool:
            lines.update(event_lines(work / "journal", seen))
            return n + 1 in lines

        return measure(log, samples, rng, reacted, socket=str(work / "fs0.sock"))


def run_sec(work: Path, samples: int, rng: random.Random, poll_s: float) -> list[float]:
    """SEC with one rule whose action writes the matched line to a file."""
    log, out, conf = work / "ch.log", work / "sec.out", work / "live.sec"
    log.write_text("")
    out.write_text("")
    conf.write_text(
        "type=Single\nptype=RegExp\npattern=Failed connecting the backend .* socket (\\S+):\n"
        f"desc=connect timeout\naction=write {out} $1\n"
    )
    proc = subprocess.Popen(
        [
            shutil.which("sec") or "sec",
            f"--conf={conf}",
            f"--input={log}",
            f"--poll-timeout={poll_s}",
            "--log=/dev/null",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(2.0)
        if proc.poll() is not None:
            raise RuntimeError("sec did not start")

        def reacted(n: int) -> bool:
            return f"/run/bench{n}.sock\n".encode() in out.read_bytes()

        return measure(log, samples, rng, reacted)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=LIMIT_S)


MTAIL_PROGRAM = """\
counter healer_bench_timeouts
/Failed connecting the backend .* socket (\\S+):/ {
  healer_bench_timeouts++
}
"""


def start_mtail(progs: Path, log: Path, port: int, poll: str) -> subprocess.Popen[bytes]:
    """mtail on one log, its /metrics on loopback ``port`` (0: any)."""
    return subprocess.Popen(
        [
            shutil.which("mtail") or "mtail",
            "--progs", str(progs), "--logs", str(log), "--address", "127.0.0.1",
            "--port", str(port), f"--poll_interval={poll}", "--logtostderr",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip


def run_mtail(work: Path, samples: int, rng: random.Random, poll: str) -> list[float]:
    """mtail counting the line; the reaction is the counter on its /metrics (mtail runs
    no action: an alert on it would add a scrape, a rule evaluation and Alertmanager)."""
    log, progs = work / "ch.log", work / "progs"
    log.write_text("")
    progs.mkdir()
    (progs / "bench.mtail").write_text(MTAIL_PROGRAM)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = start_mtail(progs, log, port, poll)
    url = f"http://127.0.0.1:{port}/metrics"

    def counted() -> float:
        with urllib.request.urlopen(url, timeout=5) as response:
            for line in response.read().decode().splitlines():
                if line.startswith("healer_bench_timeouts"):
                    return float(line.split()[-1])
        return 0.0

    try:
        deadline = time.monotonic() + LIMIT_S
        while True:  # started once it answers
            try:
                counted()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("mtail did not start") from None
                time.sleep(0.05)
        time.sleep(2.0)
        return measure(log, samples, rng, lambda n: counted() >= n + 1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=LIMIT_S)


def row(peer: str, setting: str, latencies: list[float]) -> str:
    ms = sorted(v * 1000 for v in latencies)
    p90 = ms[round(0.9 * (len(ms) - 1))]
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    return (
        f"| {peer} | {setting} | {statistics.median(ms):.1f} | {p90:.1f} | {p99:.1f} "
        f"| {ms[-1]:.1f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    add_peer_arguments(parser, ["20", "5", "inotify"])
    parser.add_argument(
        "--mtail-poll",
        nargs="*",
        default=["250ms"],
        help="mtail --poll_interval values to run (250ms is its default; none: skip mtail)",
    )
    args = parser.parse_args()
    rows = []
    for notify in args.notify:
        with tempfile.TemporaryDirectory(prefix="healer-append-") as tmp:
            found = run_healer(Path(tmp), args.samples, random.Random(args.seed), notify)
        rows.append(row("healer watch", watcher_label(notify), found))
    if sec_is_missing(args.sec_poll):
        return 2
    for poll in args.sec_poll:
        with tempfile.TemporaryDirectory(prefix="sec-append-") as tmp:
            found = run_sec(Path(tmp), args.samples, random.Random(args.seed), poll)
        default = " (default)" if poll == 0.1 else ""
        rows.append(row("SEC", f"--poll-timeout={poll}{default}", found))
    if args.mtail_poll and shutil.which("mtail") is None:
        print("mtail is not installed (apt-get install mtail), or pass --mtail-poll with no value")
        return 2
    for poll in args.mtail_poll:
        with tempfile.TemporaryDirectory(prefix="mtail-append-") as tmp:
            found = run_mtail(Path(tmp), args.samples, random.Random(args.seed), poll)
        default = " (default)" if poll == "250ms" else ""
        rows.append(row("mtail 3.0.0~rc50", f"--poll_interval={poll}{default}", found))
    print(f"log line appended -> reaction (healer: its event journaled; SEC: its action wrote; "
          f"mtail: its counter shows on /metrics), "
          f"{args.samples} samples each, same run")  # fmt: skip
    print()
    print("| peer | setting | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
