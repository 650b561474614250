"""Idle cost of ``healer watch``: CPU and RSS with N supervised shares and nothing happening.

Starts healer with ``--shares`` real virtiofsd daemons on held sockets and one tailed
log, waits for start-up to settle, then samples healer's own CPU time (utime + stime
from /proc/PID/stat, all threads) and RSS over ``--seconds``. The virtiofsd children
are not counted: they are the daemons the user runs anyway.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--shares", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument(
        "--metrics",
        default="127.0.0.1:0",
        help='[healer] metrics: an address (default: a free loopback port) or "off"',
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="healer-idle-") as tmp:
        work = Path(tmp)
        log = work / "ch.log"
        log.write_text("")
        lines = [
            f'[healer]\njournal = "{work / "journal"}"\nrules = "{ROOT / "rules"}"\n'
            f'metrics = "{args.metrics}"\n'
        ]
        for n in range(args.shares):
            shared = work / f"shared{n}"
            shared.mkdir()
            lines.append(
                f'[[share]]\nname = "fs{n}"\nsocket = "{work / f"fs{n}.sock"}"\n'
                f'shared_dir = "{shared}"\n'
            )
        lines.append(f'[[source]]\npath = "{log}"\n')
        config = work / "healer.toml"
        config.write_text("\n".join(lines))
        proc = subprocess.Popen(
            [sys.executable, "-m", "healer", "watch", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 60
            while not all((work / f"fs{n}.sock").exists() for n in range(args.shares)):
                if time.monotonic() > deadline or proc.poll() is not None:
                    print("healer did not start its shares", file=sys.stderr)
                    return 1
                time.sleep(0.1)
            time.sleep(3.0)  # let start-up settle
            cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
            time.sleep(args.seconds)
            cpu1, t1 = cpu_seconds(proc.pid), time.monotonic()
            rss = rss_mib(proc.pid)
            threads = len(list(Path(f"/proc/{proc.pid}/task").iterdir()))
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    share = 100 * (cpu1 - cpu0) / (t1 - t0)
    print(
        f"healer watch, {args.shares} supervised shares + 1 tailed log, "
        f"metrics {args.metrics}, idle {t1 - t0:.0f} s"
    )
    print()
    print("| idle CPU % (one core) | RSS MiB | threads |")
    print("|---|---|---|")
    print(f"| {share:.2f} | {rss:.1f} | {threads} |")
    resolution = 100 / CLK_TCK / (t1 - t0)
    print(f"\n(CPU from /proc/PID/stat ticks at {CLK_TCK} Hz: resolution {resolution:.3f} %)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
