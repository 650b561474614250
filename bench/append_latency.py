"""Log line appended -> action started, for ``healer watch`` tailing a log.

Each sample appends one cloud-hypervisor connect-timeout line (a new socket path each
time, so each is a new incident) to a tailed log with ``os.write`` on an O_APPEND fd,
then reads healer's journal until the ``started`` outcome of the decision it caused
appears. The journal is read every millisecond, which adds its own small delay.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
LIMIT_S = 30.0


def started_keys(journal: Path, seen: dict[Path, int]) -> set[str]:
    """Keys with a ``started`` outcome in the journal records added since last time."""
    keys = set()
    for segment in sorted(journal.glob("segment-*")):
        with segment.open("rb") as file:
            file.seek(seen.get(segment, 0))
            data = file.read()
        end = data.rfind(b"\n") + 1
        seen[segment] = seen.get(segment, 0) + end
        for line in data[:end].splitlines():
            record = orjson.loads(line)
            if record.get("type") == "outcome" and record.get("status") == "started":
                keys.add(record["key"])
    return keys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="healer-append-") as tmp:
        work = Path(tmp)
        (work / "shared").mkdir()
        log = work / "ch.log"
        log.write_text("")
        config = work / "healer.toml"
        config.write_text(
            f'[healer]\njournal = "{work / "journal"}"\nrules = "{ROOT / "rules"}"\n\n'
            f'[[share]]\nname = "fs0"\nsocket = "{work / "fs0.sock"}"\n'
            f'shared_dir = "{work / "shared"}"\n\n[[source]]\npath = "{log}"\n'
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "healer", "watch", "--config", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        latencies: list[float] = []
        try:
            deadline = time.monotonic() + LIMIT_S
            while not (work / "fs0.sock").exists():
                if time.monotonic() > deadline:
                    raise RuntimeError("healer watch did not start")
                time.sleep(0.01)
            time.sleep(2.0)
            seen: dict[Path, int] = {}
            started_keys(work / "journal", seen)
            fd = os.open(log, os.O_WRONLY | os.O_APPEND)
            for n in range(args.samples):
                time.sleep(rng.uniform(0.1, 0.5))
                socket = f"/run/bench{n}.sock"
                line = (
                    "cloud-hypervisor:  70.500000s: <vmm> ERROR:virtio-devices/src/vhost_user/"
                    "vu_common_ctrl.rs:462 -- Failed connecting the backend after trying for 1 "
                    f"minute for socket {socket}: VhostUserProtocol(SocketConnect(Os {{ code: 111,"
                    ' kind: ConnectionRefused, message: "Connection refused" }))\r\n'
                ).encode()
                key = f"{socket}#1/ensure_virtiofsd/1"
                start = time.perf_counter()
                os.write(fd, line)
                deadline = time.monotonic() + LIMIT_S
                while key not in started_keys(work / "journal", seen):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"no action for sample {n}")
                    time.sleep(0.001)
                latencies.append(time.perf_counter() - start)
            os.close(fd)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=LIMIT_S)
    ms = sorted(v * 1000 for v in latencies)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    print(f"log line appended -> action started, healer watch, {len(ms)} samples")
    print()
    print("| p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---|---|---|")
    p90 = ms[round(0.9 * (len(ms) - 1))]
    print(f"| {statistics.median(ms):.1f} | {p90:.1f} | {p99:.1f} | {ms[-1]:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
