"""Log line appended -> action started, for ``healer watch`` and SEC tailing a log.

Both peers run in the same invocation on the same lines. Each sample appends one
cloud-hypervisor connect-timeout line (a new socket path each time, so each is a new
incident) to a tailed log with ``os.write`` on an O_APPEND fd, then waits for the
reaction: for healer the ``started`` outcome of the decision it caused in the journal,
for SEC the line its rule's ``write`` action appends to a file. Both are read every
millisecond, which adds its own small delay.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
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


def failure_line(n: int) -> bytes:
    """A connect-timeout line about its own socket, so each sample is a new incident."""
    return (
        "cloud-hypervisor:  70.500000s: <vmm> ERROR:virtio-devices/src/vhost_user/"
        "vu_common_ctrl.rs:462 -- Failed connecting the backend after trying for 1 "
        f"minute for socket /run/bench{n}.sock: VhostUserProtocol(SocketConnect(Os {{ code: 111,"
        ' kind: ConnectionRefused, message: "Connection refused" }))\r\n'
    ).encode()


def measure(
    log: Path, samples: int, rng: random.Random, reacted: Callable[[int], bool]
) -> list[float]:
    """Append one line per sample (random pauses), time until ``reacted(n)``."""
    latencies = []
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        for n in range(samples):
            time.sleep(rng.uniform(0.1, 0.5))
            start = time.perf_counter()
            os.write(fd, failure_line(n))
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
        keys = started_keys(work / "journal", seen)

        def reacted(n: int) -> bool:
            keys.update(started_keys(work / "journal", seen))
            return f"/run/bench{n}.sock#1/ensure_virtiofsd/1" in keys

        return measure(log, samples, rng, reacted)


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
    print(f"log line appended -> reaction (healer: action started; SEC: its action wrote), "
          f"{args.samples} samples each, same run")  # fmt: skip
    print()
    print("| peer | setting | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
