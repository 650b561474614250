"""One fault, one healing, measured: per fault kind and daemon, what healer decided,
how soon the VMM was served again, and how true the recorded recovery time is.

A real virtiofsd (each daemon of the test matrix that is here), `healer watch` with the
cloud-hypervisor stand-in as the VMM (its log is uptime-only, as CH v53 writes it,
and tailed by healer) and a recording guest transport. Fault kinds:

- ``kill-connected``: SIGKILL of the daemon while the VMM is served;
- ``kill-idle``: SIGKILL of a daemon nobody is connected to (no VMM device); served
  means its successor runs and listens;
- ``dead-probes``: three connect-and-close probes wait in the backlog, then the kill;
- ``double-kill``: a kill, and another 20 ms after the VMM reconnected.

Per fault: healing decisions (respawns that are not drains of dead connections) and
guest remounts; kill -> served (the VMM's own reconnect, or the client's GET_FEATURES
answered); and the recorded recovery duration (the journal's failing -> healthy, in
event time) minus the measured outage. Faults are 1.5 s apart and the rules start the
backoff at 0.1 s and over after 1 s of health (storms from 50), so each fault is a
first death: this measures attribution and speed, not the backoff. Run:

    .venv/bin/python bench/one_fault.py --faults 20
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import available_daemons  # noqa: E402
from test_healing_live import Rig, healings, recoveries, rig  # noqa: E402

from healer.engine import Action  # noqa: E402
from healer.supervise import DaemonInfo, is_listening  # noqa: E402

KINDS = ("kill-connected", "kill-idle", "dead-probes", "double-kill")
LIMIT_S = 30.0


def _wait(condition: Callable[[], object], limit_s: float = LIMIT_S) -> float:
    """Poll every millisecond; the perf_counter time it became true."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the condition was not reached")
        time.sleep(0.001)
    return time.perf_counter()


def _kill(running: Rig) -> float:
    pid = running.daemon()
    if pid is None:
        _wait(lambda: running.daemon() is not None)
        pid = running.daemon()
    assert pid is not None
    at = time.perf_counter()
    os.kill(pid, signal.SIGKILL)
    return at


def _reconnected(running: Rig, before: int) -> float:
    return _wait(lambda: running.vmm.stats.connects > before)


def _fault(running: Rig, kind: str) -> float:
    """Inject one fault; seconds from the (last) kill until the share was served."""
    if kind == "kill-idle":
        old = running.daemon()
        at = _kill(running)
        sock = running.root / "fs0.sock"
        return _wait(lambda: running.daemon() not in (None, old) and is_listening(sock)) - at
    if kind == "dead-probes":
        for _ in range(3):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            probe.connect(str(running.root / "fs0.sock"))
            probe.close()
    before = running.vmm.stats.connects
    at = _kill(running)
    served = _reconnected(running, before)
    if kind == "double-kill":  # the outage runs from the first kill to the last reconnect
        time.sleep(0.02)
        before = running.vmm.stats.connects
        _kill(running)
        served = _reconnected(running, before)
    return served - at


def _run(daemon: DaemonInfo, kind: str, faults: int) -> dict[str, object]:
    os.environ["HEALER_VIRTIOFSD"] = daemon.path
    if kind == "kill-idle":  # nothing reconnects, so no recovery: one first death per rig
        parts = [_faults(kind, 1) for _ in range(faults)]
        served = [s for p in parts for s in p[0]]
        respawns = sum(p[1] for p in parts)
        remounts = sum(p[2] for p in parts)
        errors: list[float] = []
    else:
        served, respawns, remounts, errors = _faults(kind, faults)
    deaths = faults * (2 if kind == "double-kill" else 1)
    ms = sorted(s * 1000 for s in served)
    return {
        "daemon": daemon.id,
        "fault": kind,
        "faults": faults,
        "deaths": deaths,
        "decisions_per_death": round(respawns / deaths, 2),
        "remounts_per_death": round(remounts / deaths, 2),
        "served_p50_ms": round(statistics.median(ms), 1),
        "served_p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 1),
        "recovery_error_ms": round(statistics.median(errors) * 1000, 1) if errors else None,
    }


def _faults(kind: str, faults: int) -> tuple[list[float], int, int, list[float]]:
    """``faults`` faults on one rig, with the daemon HEALER_VIRTIOFSD names: (served
    seconds, respawns, remounts, recovery errors)."""
    with rig(quick=True, devices=kind != "kill-idle") as running:
        running.vmm.tick_s = 0.001  # the stand-in notices a hang-up within 1 ms
        if kind == "kill-idle":
            _wait(lambda: running.daemon() is not None)
            time.sleep(1.1)
        served: list[float] = []
        for _ in range(faults):
            served.append(_fault(running, kind))
            time.sleep(1.5)  # healthy for longer than healthy_after: the next is a first death
        time.sleep(1.0)
        records = running.records()
        respawns = len(healings(records, Action.RESPAWN))
        remounts = running.remounts()
        lasted = recoveries(records)
    errors = [recorded - measured for recorded, measured in zip(lasted, served, strict=False)]
    return served, respawns, remounts, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--faults", type=int, default=20, help="faults per kind and daemon")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--daemons", default="", help="ids, e.g. c-7.2 (default: all here)")
    args = parser.parse_args()
    daemons = available_daemons()
    wanted = [d for d in args.daemons.split(",") if d] or sorted(daemons)
    rows = [_run(daemons[d], kind, args.faults) for d in wanted for kind in args.kinds.split(",")]
    print("| daemon | fault | respawns/death | remounts/death | kill -> served p50 / p99 ms "
          "| recorded recovery - measured, median ms |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for r in rows:
        error = "n/a (no client)" if r["recovery_error_ms"] is None else r["recovery_error_ms"]
        print(
            f"| {r['daemon']} | {r['fault']} | {r['decisions_per_death']} | "
            f"{r['remounts_per_death']} | {r['served_p50_ms']} / {r['served_p99_ms']} | {error} |"
        )
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "one_fault.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
