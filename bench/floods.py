"""Floods, as figures: a tailed log written in one burst, and a daemon flooding its stderr.

Both run ``healer watch`` as a user would (a share, its holder, metrics on loopback) and
count what healer read from its own ``/metrics`` (``healer_log_lines_total``), polled
every 10 ms:

- **tail burst**: ``--lines`` lines of debug-level virtiofsd chatter (no events, so no
  action runs) appended to a tailed log as fast as Python writes; reported are the
  write time, the time until healer had read every line, the catch-up rate and the lag
  after the last write.
- **stderr flood**: the share's "virtiofsd" is a stand-in that writes ``--stderr-lines``
  lines to its stderr as fast as it can and then waits (it never serves: this measures
  the reading). The holder points a daemon's stderr at a file of its own, so nothing
  can be shed: healer reads behind the writer and catches up. Reported are the writer's
  rate, healer's reading rate, and the lines missing at the end (0 expected), with the
  limit hits healer counted.

The rates depend on the machine; they are figures to compare between builds, not
thresholds.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from _healer import healer_watch

ROOT = Path(__file__).resolve().parent.parent
_SAMPLE = re.compile(r"^(healer_log_lines_total|healer_limit_hits_total)\{([^}]*)\} (\S+)$", re.M)

CHATTER = (
    "[2024-12-04T08:13:20Z DEBUG virtiofsd::server] Received request: opcode=Getattr (3), "
    "inode={n}, unique={n}, pid=4242\n"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(address: str) -> dict[str, float]:
    """``name{labels}`` -> value for the two counters read here."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {f"{m[1]}{{{m[2]}}}": float(m[3]) for m in _SAMPLE.finditer(text)}


def lines_read(samples: dict[str, float], source: str) -> float:
    """Lines read from sources whose label starts with ``source``."""
    return sum(
        v
        for k, v in samples.items()
        if k.startswith("healer_log_lines_total") and f'source="{source}' in k
    )


def limit_hits(samples: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in samples.items() if k.startswith("healer_limit_hits_total") and v}


def config_text(work: Path, metrics: str, virtiofsd: list[str] | None) -> str:
    argv = "" if virtiofsd is None else f"virtiofsd = {json.dumps(virtiofsd)}\n"
    return (
        f'[healer]\njournal = "{work / "journal"}"\nrules = "{ROOT / "rules"}"\n'
        f'metrics = "{metrics}"\n\n'
        f'[[share]]\nname = "fs0"\nsocket = "{work / "fs0.sock"}"\n'
        f'shared_dir = "{work / "shared"}"\n{argv}\n'
        f'[[source]]\npath = "{work / "burst.log"}"\n'
    )


def serving(work: Path, metrics: str) -> bool:
    """healer answers on its metrics address and the share's socket is there."""
    try:
        scrape(metrics)
    except OSError:
        return False
    return (work / "fs0.sock").exists()


def wait_until(done: object, limit_s: float) -> float:
    """Poll ``done()`` every 10 ms; the time it first held (monotonic), or raise."""
    assert callable(done)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if done():
            return time.monotonic()
        time.sleep(0.01)
    raise RuntimeError(f"not done within {limit_s:.0f} s")


def tail_burst(work: Path, n: int, limit_s: float) -> str:
    (work / "shared").mkdir()
    log = work / "burst.log"
    log.write_text("")
    metrics = f"127.0.0.1:{free_port()}"
    config = work / "healer.toml"
    config.write_text(config_text(work, metrics, None))
    data = "".join(CHATTER.format(n=i) for i in range(n)).encode()

    with healer_watch(config, lambda: serving(work, metrics)):
        time.sleep(1.0)  # start-up settles
        base = lines_read(scrape(metrics), log.name)
        start = time.monotonic()
        with log.open("ab", buffering=0) as out:
            for at in range(0, len(data), 4 << 20):
                out.write(data[at : at + (4 << 20)])
        written = time.monotonic()
        done = wait_until(lambda: lines_read(scrape(metrics), log.name) - base >= n, limit_s)
        hits = limit_hits(scrape(metrics))
    took = done - start
    return (
        f"| tail burst | {n:,} lines ({len(data) / 1e6:.0f} MB) appended in "
        f"{written - start:.2f} s | all read {took:.2f} s after the first write "
        f"| {n / took / 1e3:.0f} k lines/s | lag after the last write {done - written:.2f} s "
        f"| limits hit: {hits or 'none'} |"
    )


FLOODER = """\
import os, sys, time
n = int(sys.argv[1])
line = b"[2024-12-04T08:13:20Z DEBUG virtiofsd::server] Replying OK, unique: 7\\n"
chunk = line * 10_000
began = time.time()
start = time.monotonic()
for _ in range(n // 10_000):
    os.write(2, chunk)
took = time.monotonic() - start
with open(sys.argv[2], "w") as out:
    out.write(f"{began} {took}\\n")
time.sleep(3600)
"""


def stderr_flood(work: Path, n: int, limit_s: float) -> str:
    (work / "shared").mkdir()
    (work / "burst.log").write_text("")
    flooder = work / "flooder.py"
    flooder.write_text(FLOODER)
    took_file = work / "flood.took"
    metrics = f"127.0.0.1:{free_port()}"
    config = work / "healer.toml"
    argv = [sys.executable, str(flooder), str(n), str(took_file), "--fd={fd}"]
    config.write_text(config_text(work, metrics, argv))

    n = n // 10_000 * 10_000
    with healer_watch(config, lambda: serving(work, metrics)):
        wait_until(lambda: lines_read(scrape(metrics), "virtiofsd") >= n, limit_s)
        done = time.time()  # the wall clock: the stand-in says when it began, in it
        samples = scrape(metrics)
    read = lines_read(samples, "virtiofsd")
    began, wrote_s = (float(x) for x in took_file.read_text().split())
    took = done - began
    return (
        f"| stderr flood | {n:,} lines written in {wrote_s:.2f} s ({n / wrote_s / 1e3:.0f} k "
        f"lines/s) | all read {took:.2f} s after the first line (healer starting meanwhile) "
        f"| {n / took / 1e3:.0f} k lines/s "
        f"| missing {n - read:,.0f} | limits hit: {limit_hits(samples) or 'none'} |"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=2_000_000, help="lines of the tail burst")
    parser.add_argument(
        "--stderr-lines", type=int, default=2_000_000, help="lines the stand-in daemon writes"
    )
    parser.add_argument("--limit", type=float, default=300.0, help="seconds each may take")
    args = parser.parse_args(argv)
    print("| flood | written | read | rate | | |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="healer-flood-") as tmp:
        print(tail_burst(Path(tmp), args.lines, args.limit), flush=True)
    with tempfile.TemporaryDirectory(prefix="healer-flood-") as tmp:
        print(stderr_flood(Path(tmp), args.stderr_lines, args.limit), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
