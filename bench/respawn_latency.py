"""virtiofsd killed -> served again: healer watch (held socket) vs the while-true loop.

For each of ``--kills`` rounds: a vhost-user client is served, virtiofsd is SIGKILLed,
and a new client connects at once and asks GET_FEATURES; the latency is kill -> answer.
A connect that is refused (the loop's window with no listener) is retried every
millisecond and counted. Both peers run in the same invocation on the same machine.

healer runs with the shipped rules made latency-only (no backoff, no storm circuit),
because 200 kills in a row is exactly the restart storm the shipped rules stop.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from _healer import healer_watch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # rulepatch: the shipped rules, changed as objects

from rulepatch import shipped_rules, without, write_rules  # noqa: E402
from watching import daemon_pid  # noqa: E402

from healer.sim import VhostUserFrontend  # noqa: E402
from healer.supervise import find_virtiofsd, virtiofsd_argv  # noqa: E402
from healer.supervise.process import children  # noqa: E402

LIMIT_S = 30.0


def served(sock: Path) -> tuple[VhostUserFrontend, float, int]:
    """Connect and get features; returns (open client, time answered, refused connects)."""
    refused = 0
    deadline = time.monotonic() + LIMIT_S
    while True:
        try:
            client = VhostUserFrontend(str(sock), timeout_s=LIMIT_S)
        except (ConnectionRefusedError, FileNotFoundError):
            refused += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.001)
            continue
        client.get_features()
        return client, time.perf_counter(), refused


def measure(serving: Callable[[], int | None], sock: Path, kills: int) -> tuple[list[float], int]:
    """Kill the daemon serving a connected client (``serving()``: its pid); time until a
    new client is served."""
    latencies: list[float] = []
    refused_total = 0
    client, _, _ = served(sock)
    while len(latencies) < kills:
        pid = serving()
        if pid is None:
            time.sleep(0.001)
            continue
        start = time.perf_counter()
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue  # it was just replaced; look again
        fresh, answered, refused = served(sock)
        client.close()
        client = fresh
        latencies.append(answered - start)
        refused_total += refused
    client.close()
    return latencies, refused_total


def healer_peer(work: Path, shared: Path, kills: int) -> tuple[list[float], int]:
    latency_only = shipped_rules()
    latency_only = replace(latency_only, policy=replace(latency_only.policy, backoff_initial_s=0.0))
    rules = write_rules(without(latency_only, "restart-storm", "daemon-storm"), work / "rules")
    config = work / "healer.toml"
    sock = work / "healer.sock"
    config.write_text(
        f'[healer]\njournal = "{work / "journal"}"\nrules = "{rules}"\n\n'
        f'[[share]]\nname = "bench"\nsocket = "{sock}"\nshared_dir = "{shared}"\n'
    )
    with healer_watch(config, sock.exists, limit_s=LIMIT_S):
        return measure(lambda: daemon_pid(config, "bench"), sock, kills)


def loop_peer(
    work: Path, shared: Path, kills: int, binary: str, impl: str
) -> tuple[list[float], int]:
    sock = work / "loop.sock"
    argv = virtiofsd_argv(binary, impl, shared_dir=str(shared))
    flags = [a for a in argv[1:] if "{fd}" not in a and a != "--fd"]
    socket_flag = f"--socket-path={sock}" if impl == "c" else f"--socket-path {sock}"
    command = (
        f"while true; do {binary} {socket_flag} {' '.join(flags)} 2>/dev/null; sleep 0.5; done"
    )
    bash = shutil.which("bash") or "/bin/bash"
    proc = subprocess.Popen([bash, "-c", command], start_new_session=True)
    try:
        return measure(lambda: last(children(proc.pid)), sock, kills)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=LIMIT_S)


def last(pids: list[int]) -> int | None:
    return pids[-1] if pids else None


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kills", type=int, default=200)
    args = parser.parse_args()
    found = find_virtiofsd()
    if found is None:
        print("virtiofsd is not installed (apt-get install qemu-system-common)", file=sys.stderr)
        return 2
    binary, impl = found
    with tempfile.TemporaryDirectory(prefix="healer-respawn-") as tmp:
        work = Path(tmp)
        shared = work / "shared"
        shared.mkdir()
        (work / "h").mkdir()
        (work / "l").mkdir()
        results = {
            "healer watch (held socket)": healer_peer(work / "h", shared, args.kills),
            "while true; virtiofsd; sleep 0.5": loop_peer(
                work / "l", shared, args.kills, binary, impl
            ),
        }
    print(f"virtiofsd SIGKILL -> next client served, {args.kills} kills each, {binary}")
    print()
    print("| peer | p50 ms | p99 ms | max ms | refused connects |")
    print("|---|---|---|---|---|")
    for name, (latencies, refused) in results.items():
        ms = [v * 1000 for v in latencies]
        print(
            f"| {name} | {statistics.median(ms):.1f} | {quantile(ms, 0.99):.1f} | "
            f"{max(ms):.1f} | {refused} |"
        )
    (healer_ms, _), (loop_ms, _) = results.values()
    ratio = statistics.median(loop_ms) / statistics.median(healer_ms)
    print(f"\nloop p50 / healer p50: {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
