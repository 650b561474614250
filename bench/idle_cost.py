"""Idle cost of ``healer watch`` (and SEC, same run): CPU and RSS with nothing happening.

Starts healer with ``--shares`` real virtiofsd daemons on held sockets and one tailed
log, waits for start-up to settle, then samples healer's own CPU time (utime + stime
from /proc/PID/stat, all threads) and RSS over ``--seconds``: ``healer watch`` and its
holder (the process that keeps the sockets and runs the daemons), summed. The virtiofsd
daemons are not counted: they are the daemons the user runs anyway.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _healer import (
    add_peer_arguments,
    healer_watch,
    sec_is_missing,
    watcher_label,
    watcher_lines,
)
from append_latency import MTAIL_PROGRAM, start_mtail

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from watching import holder_pid  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def sample(pids: list[int], seconds: float) -> tuple[float, float, int]:
    """Idle CPU % of one core, RSS MiB and threads of the processes ``pids`` (summed)
    over ``seconds``."""
    cpu0, t0 = sum(map(cpu_seconds, pids)), time.monotonic()
    time.sleep(seconds)
    cpu1, t1 = sum(map(cpu_seconds, pids)), time.monotonic()
    threads = sum(len(list(Path(f"/proc/{pid}/task").iterdir())) for pid in pids)
    return 100 * (cpu1 - cpu0) / (t1 - t0), sum(map(rss_mib, pids)), threads


def run_healer(
    work: Path, shares: int, seconds: float, metrics: str, notify: str, *, vms: int = 0
) -> str:
    """``vms`` > 0: the shares spread over that many VMs, each a [[vmm]] table (its API
    socket not there: the start-up vm.info fails at once) and a tailed log of its own."""
    lines = [
        f'[healer]\njournal = "{work / "journal"}"\nrules = "{ROOT / "rules"}"\n'
        f'metrics = "{metrics}"\n{watcher_lines(notify)}'
    ]
    for n in range(shares):
        shared = work / f"shared{n}"
        shared.mkdir()
        vm = f'vm = "vm{n % vms}"\n' if vms else ""
        lines.append(
            f'[[share]]\nname = "fs{n}"\n{vm}socket = "{work / f"fs{n}.sock"}"\n'
            f'shared_dir = "{shared}"\n'
        )
    for k in range(max(vms, 1)):
        log = work / f"ch{k}.log"
        log.write_text("")
        if vms:
            lines.append(f'[[vmm]]\nname = "vm{k}"\napi_socket = "{work / f"vm{k}.sock"}"\n')
        lines.append(f'[[source]]\npath = "{log}"\n' + (f'vm = "vm{k}"\n' if vms else ""))
    config = work / "healer.toml"
    config.write_text("\n".join(lines))

    def started() -> bool:
        return all((work / f"fs{n}.sock").exists() for n in range(shares))

    with healer_watch(config, started) as proc:
        time.sleep(3.0)  # let start-up settle
        holder = holder_pid(config)
        if holder is None:
            raise RuntimeError("healer's holder is not running")
        cpu, rss, threads = sample([proc.pid, holder], seconds)
    peer = f"healer watch + holder, {shares} shares + 1 log"
    if vms:
        peer = f"healer watch + holder, {shares} shares over {vms} VMs + {vms} logs"
    return f"| {peer} | {watcher_label(notify)} | {cpu:.2f} | {rss:.1f} | {threads} |"


def run_sec(work: Path, seconds: float, poll: float) -> str:
    """SEC following one quiet file with one rule (the peer-benchmark setup)."""
    log, conf = work / "ch.log", work / "idle.sec"
    log.write_text("")
    conf.write_text(
        "type=Single\nptype=SubStr\npattern=Failed connecting the backend\n"
        "desc=connect timeout\naction=none\n"
    )
    sec = shutil.which("sec") or "sec"
    proc = subprocess.Popen(
        [sec, f"--conf={conf}", f"--input={log}", f"--poll-timeout={poll}", "--log=/dev/null"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(2.0)
        cpu, rss, threads = sample([proc.pid], seconds)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    default = " (default)" if poll == 0.1 else ""
    return f"| SEC, 1 log | --poll-timeout={poll}{default} | {cpu:.2f} | {rss:.1f} | {threads} |"


def run_mtail(work: Path, seconds: float, poll: str) -> str:
    """mtail following one quiet file with one counter (as bench/append_latency.py)."""
    log, progs = work / "ch.log", work / "progs"
    log.write_text("")
    progs.mkdir()
    (progs / "idle.mtail").write_text(MTAIL_PROGRAM)
    proc = start_mtail(progs, log, 0, poll)
    try:
        time.sleep(2.0)
        if proc.poll() is not None:
            raise RuntimeError("mtail did not start")
        cpu, rss, threads = sample([proc.pid], seconds)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    default = " (default)" if poll == "250ms" else ""
    return f"| mtail, 1 log | --poll_interval={poll}{default} | {cpu:.2f} | {rss:.1f} | {threads} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--shares", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--vms", type=int, default=0, help="spread the shares over this many VMs ([[vmm]] each)"
    )
    parser.add_argument(
        "--metrics",
        default="127.0.0.1:0",
        help='[healer] metrics: an address (default: a free loopback port) or "off"',
    )
    add_peer_arguments(parser, ["inotify", "20"])
    parser.add_argument(
        "--mtail-poll", nargs="*", default=[], help="mtail --poll_interval values (e.g. 250ms)"
    )
    args = parser.parse_args()
    rows = []
    for notify in args.notify:
        with tempfile.TemporaryDirectory(prefix="healer-idle-") as tmp:
            rows.append(
                run_healer(Path(tmp), args.shares, args.seconds, args.metrics, notify, vms=args.vms)
            )
    if sec_is_missing(args.sec_poll):
        return 2
    for poll in args.sec_poll:
        with tempfile.TemporaryDirectory(prefix="sec-idle-") as tmp:
            rows.append(run_sec(Path(tmp), args.seconds, poll))
    for interval in args.mtail_poll:
        with tempfile.TemporaryDirectory(prefix="mtail-idle-") as tmp:
            rows.append(run_mtail(Path(tmp), args.seconds, interval))
    print(f"idle for {args.seconds:.0f} s each, same run; healer metrics {args.metrics}")
    print()
    print("| peer | setting | idle CPU % (one core) | RSS MiB | threads |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    resolution = 100 / CLK_TCK / args.seconds
    print(f"\n(CPU from /proc/PID/stat ticks at {CLK_TCK} Hz: resolution {resolution:.3f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
