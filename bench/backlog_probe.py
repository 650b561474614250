"""Cost of one sock_diag look at a held socket's accept queue (healer.supervise.backlog).

healer asks before every virtiofsd start, so this is per-spawn overhead. It times
``queued()`` (a fresh netlink socket, one request, one reply) on a listener with
``--live`` live connections then ``--dead`` dead ones queued, plus ``pending()`` and
(with a live head) ``drain_dead()``, which then finds nothing to drop. Prints the median and the
10th..90th percentiles of ``--runs`` calls after ``--warmup`` calls.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from healer.supervise.backlog import drain_dead, pending, queued  # noqa: E402


def timed(call: Callable[[], object], runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        call()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return samples


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5000)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument(
        "--dead", type=int, default=3, help="dead connections queued behind the live head"
    )
    ap.add_argument(
        "--live", type=int, default=1, help="live connections queued (the first is the head)"
    )
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "bench.sock")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(path)
        listener.listen(args.dead + args.live + 1)
        clients = []
        for _ in range(args.live):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(path)
            clients.append(c)
        for _ in range(args.dead):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as c:
                c.connect(path)
        shown = queued(listener)
        if shown is None:
            print("sock_diag is unavailable here: queued() returned None")
            return 1
        print(f"queue: {len(shown)} connections, {shown.count(0)} dead; {args.runs} runs")
        print("| call | median µs | p10..p90 µs |")
        print("|---|---:|---:|")
        calls: list[tuple[str, Callable[[], object]]] = [
            ("queued()", lambda: queued(listener)),
            ("pending()", lambda: pending(listener)),
        ]
        if args.live:  # with a live head the drain drops nothing, so every call is alike
            calls.append(("drain_dead(), live head", lambda: drain_dead(listener)))
        for name, call in calls:
            samples = timed(call, args.runs, args.warmup)
            p10, *_, p90 = statistics.quantiles(samples, n=10)
            print(f"| {name} | {statistics.median(samples):.1f} | {p10:.1f}..{p90:.1f} |")
        for c in clients:
            c.close()
        listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
