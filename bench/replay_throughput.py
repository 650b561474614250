"""Offline replay throughput: healer vs SEC vs a bare Python ``re`` loop, same file, same run.

Generates one mixed-format log (``gen_mixed_log.py``), then times each tool on it:
one untimed warm-up run, then ``--runs`` timed runs; the median wall time is
reported, with start-up included (it is part of what a user waits for). Peak RSS comes
from GNU ``/usr/bin/time -f %M`` around each run. Without it, the child's own
``ru_maxrss`` (``os.wait4``) is shown, which on Linux is never below this script's RSS at
fork time (the high-water mark survives exec), so it is then only an upper bound;
``RUSAGE_CHILDREN`` would be worse still, the largest child so far.

Every tool's per-kind counts are checked against the generator's ground truth, so the
speeds compare the same work. Exit status: 0 if all counts match; 1 if healer failed
or its counts differ from the truth; 2 if only SEC's or the floor's counts differ
(the rule set, not healer, is then wrong).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gen_field_shapes
import gen_mixed_log
import py_floor

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
SEC_RULES = BENCH / "sec" / "healer_kinds.sec"
Counts = dict[str, int]


@dataclass(frozen=True, slots=True)
class Run:
    """One finished child process."""

    wall_s: float
    cpu_s: float  # user + system time of the child (healer reads ahead on a second thread)
    maxrss_kib: int
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True, slots=True)
class Result:
    """A tool's timed runs and the counts it reported on its last run."""

    tool: str
    walls: list[float]
    maxrss_kib: int
    counts: Counts | None
    error: str | None = None
    cpus: tuple[float, ...] = ()

    @property
    def median(self) -> float:
        return statistics.median(self.walls)

    @property
    def cpu(self) -> float:
        return statistics.median(self.cpus) if self.cpus else float("nan")


GNU_TIME = Path("/usr/bin/time")


def run_once(cmd: Sequence[str], workdir: Path) -> Run:
    """Run ``cmd`` with stdout/stderr to files; time it and read its peak RSS."""
    with tempfile.TemporaryDirectory(prefix="healer-run-") as tmp:
        rss_file = Path(tmp) / "maxrss"
        argv = list(cmd)
        if GNU_TIME.exists():
            argv = [str(GNU_TIME), "-f", "%M", "-o", str(rss_file), *argv]
        with (Path(tmp) / "out").open("w+b") as out, (Path(tmp) / "err").open("w+b") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(
                argv, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=workdir
            )
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read(), err.read()
        maxrss = usage.ru_maxrss
        if rss_file.exists():
            text = rss_file.read_text(encoding="utf-8").strip().splitlines()
            if text and text[-1].isdigit():
                maxrss = int(text[-1])
    return Run(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        maxrss_kib=maxrss,
        returncode=proc.returncode,
        stdout=stdout.decode("utf-8", "replace"),
        stderr=stderr.decode("utf-8", "replace"),
    )


def measure(
    tool: str,
    cmd: Sequence[str],
    runs: int,
    parse: Callable[[str], Counts],
    *,
    workdir: Path = ROOT,
    before: Callable[[], object] | None = None,
) -> Result:
    """Warm up once, then time ``runs`` runs; stop early if the tool fails.

    ``before`` runs untimed ahead of each run (e.g. removing last run's journal).
    """
    print(f"  {tool}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    walls: list[float] = []
    cpus: list[float] = []
    rss: list[int] = []
    last: Run | None = None
    for i in range(runs + 1):
        if before is not None:
            before()
        last = run_once(cmd, workdir)
        if last.returncode != 0:
            tail = last.stderr.strip().splitlines()[-5:]
            return Result(
                tool,
                [last.wall_s],
                last.maxrss_kib,
                None,
                f"exit {last.returncode}: " + " | ".join(tail),
            )
        if i > 0:
            walls.append(last.wall_s)
            cpus.append(last.cpu_s)
            rss.append(last.maxrss_kib)
    assert last is not None
    try:
        counts = parse(last.stdout)
    except (ValueError, KeyError, TypeError) as exc:
        return Result(tool, walls, max(rss), None, f"cannot read its counts: {exc}")
    return Result(tool, walls, int(statistics.median(rss)), counts, cpus=tuple(cpus))


def parse_healer(stdout: str) -> Counts:
    """The ``healer replay --format counts`` contract: one JSON object with ``kinds``."""
    obj: Any = json.loads(stdout.strip().splitlines()[-1])
    return {str(k): int(v) for k, v in obj["kinds"].items()}


def parse_sec(stdout: str) -> Counts:
    """The ``HEALER_KIND_COUNTS k=v ...`` line the SEC_SHUTDOWN rule writes."""
    for line in stdout.splitlines():
        if line.startswith("HEALER_KIND_COUNTS"):
            pairs = (item.split("=", 1) for item in line.split()[1:])
            return {k: int(v) for k, v in pairs}
    raise ValueError("no HEALER_KIND_COUNTS line in SEC's output")


def parse_floor(stdout: str) -> Counts:
    obj: Any = json.loads(stdout)
    return {str(k): int(v) for k, v in obj["kinds"].items()}


def sec_command(sec: str, rules: Path, log: Path) -> list[str]:
    """SEC as the peer benchmark ran it (``--nochildterm``: no 3 s sleep at exit)."""
    return [
        sec,
        f"--conf={rules}",
        f"--input={log}",
        "--fromstart",
        "--notail",
        "--intevents",
        "--nochildterm",
        "--log=/dev/null",
    ]


def write_prefiltered_rules(dest: Path) -> Path:
    """The same rules behind one ``Suppress``/``NRegExp`` guard, as an expert would add."""
    union = py_floor.prefilter_pattern()
    guard = (
        "# Generated by replay_throughput.py: drop lines no counting rule can match.\n"
        "type=Suppress\nptype=NRegExp\n"
        f"pattern={union}|^SEC_SHUTDOWN$\n"
        "desc=prefilter\n\n"
    )
    path = dest / "healer_kinds_prefilter.sec"
    path.write_text(guard + SEC_RULES.read_text(encoding="utf-8"), encoding="utf-8")
    return path


def diff_counts(truth: Counts, got: Counts) -> list[tuple[str, int, int]]:
    """(kind, truth, got) for every kind where the two differ."""
    kinds = sorted(set(truth) | set(got))
    return [(k, truth.get(k, 0), got.get(k, 0)) for k in kinds if truth.get(k, 0) != got.get(k, 0)]


def fmt_rate(lines_per_s: float) -> str:
    if lines_per_s >= 1e6:
        return f"{lines_per_s / 1e6:.2f} M"
    return f"{lines_per_s / 1e3:.1f} k"


def print_table(results: list[Result], n_lines: int) -> None:
    sec = next((r for r in results if r.tool == "sec" and r.error is None), None)
    print("| tool | median wall s (min..max) | lines/s | peak RSS MiB | lines/s vs SEC |")
    print("|---|---|---|---|---|")
    for r in results:
        if r.error is not None:
            print(f"| {r.tool} | failed | - | - | - |")
            continue
        rate = n_lines / r.median
        vs = f"{rate / (n_lines / sec.median):.2f}x" if sec else "n/a"
        spread = f"{r.median:.3f} ({min(r.walls):.3f}..{max(r.walls):.3f})"
        print(f"| {r.tool} | {spread} | {fmt_rate(rate)} | {r.maxrss_kib / 1024:.1f} | {vs} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument(
        "--runs", type=int, default=3, help="timed runs per tool, after one warm-up"
    )
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--relevant-rate", type=float, default=0.01)
    parser.add_argument(
        "--keep", type=Path, help="write the log here and keep it (default: a temp dir)"
    )
    parser.add_argument(
        "--no-sec-prefilter", action="store_true", help="skip the SEC variant with a Suppress guard"
    )
    parser.add_argument(
        "--shapes",
        default=",".join(gen_field_shapes.SHAPES),
        help="the other generator's shapes to run too, comma-separated ('' for none)",
    )
    parser.add_argument(
        "--worst-lines",
        type=int,
        help="lines of the 'worst' shape (default: --lines / 10; its lines are long)",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be >= 1")

    with tempfile.TemporaryDirectory(prefix="healer-bench-") as tmp:
        workdir = (args.keep or Path(tmp)).resolve()
        workdir.mkdir(parents=True, exist_ok=True)
        log = workdir / f"mixed_{args.lines}_seed{args.seed}.log"
        started = time.perf_counter()
        with log.open("w", encoding="utf-8", newline="") as fh:
            truth_obj = gen_mixed_log.generate(fh, args.lines, args.seed, args.relevant_rate)
        gen_mixed_log.truth_path(log).write_text(
            json.dumps(truth_obj, indent=2) + "\n", encoding="utf-8"
        )
        kinds_obj: Any = truth_obj["kinds"]
        truth: Counts = {k: v for k, v in kinds_obj.items() if v}
        size = log.stat().st_size
        print(
            f"Generated {log} in {time.perf_counter() - started:.1f} s: {args.lines:,} lines, "
            f"{size:,} bytes ({size / max(args.lines, 1):.0f} B/line), "
            f"{truth_obj['relevant_records']:,} relevant records, seed {args.seed}",
            file=sys.stderr,
        )

        results: list[Result] = []
        print(f"Timing (1 warm-up + {args.runs} runs each):", file=sys.stderr)
        healer_cmd = [sys.executable, "-m", "healer", "replay", "--format", "counts", str(log)]
        results.append(measure("healer (default rules)", healer_cmd, args.runs, parse_healer))
        journal = Path(tmp) / "journal"
        journaled = [*healer_cmd[:-1], "--write-journal", str(journal), str(log)]
        results.append(
            measure(
                "healer (rules + journal)",
                journaled,
                args.runs,
                parse_healer,
                before=lambda: shutil.rmtree(journal, ignore_errors=True),
            )
        )
        events_only = [*healer_cmd[:-1], "--no-rules", str(log)]
        results.append(measure("healer (events only)", events_only, args.runs, parse_healer))
        sec_path = shutil.which("sec")
        if sec_path is None:
            print(
                "SEC is NOT on PATH: the SEC rows are skipped (apt-get install sec).",
                file=sys.stderr,
            )
        else:
            results.append(
                measure("sec", sec_command(sec_path, SEC_RULES, log), args.runs, parse_sec)
            )
            if not args.no_sec_prefilter:
                pre = write_prefiltered_rules(Path(tmp))
                results.append(
                    measure(
                        "sec + prefilter", sec_command(sec_path, pre, log), args.runs, parse_sec
                    )
                )
        floor_cmd = [sys.executable, str(BENCH / "py_floor.py"), str(log)]
        results.append(measure("python re loop", floor_cmd, args.runs, parse_floor))

        shapes = [name for name in args.shapes.split(",") if name]
        unknown = sorted(set(shapes) - set(gen_field_shapes.SHAPES))
        if unknown:
            parser.error(f"unknown shape(s): {', '.join(unknown)}")
        worst_lines = args.worst_lines or max(args.lines // 10, 1)
        shaped = [
            run_shape(
                name,
                worst_lines if name == "worst" else args.lines,
                args,
                workdir=workdir,
                tmp=Path(tmp),
                sec_path=sec_path,
            )
            for name in shapes
        ]

    print()
    print(
        f"Replay of {args.lines:,} lines ({size / 1e6:.1f} MB, seed {args.seed}, "
        f"relevant rate {args.relevant_rate}); Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; median of {args.runs} runs after 1 warm-up."
    )
    print()
    print_table(results, args.lines)
    healer = results[0]
    sec = next((r for r in results if r.tool == "sec"), None)
    if sec is None:
        print(
            "\nSEC is not on PATH: SEC was not measured, no healer/SEC ratio (apt-get install sec)."
        )
    elif healer.error is None and sec.error is None:
        ratio = sec.median / healer.median
        print(f"\nhealer/SEC throughput ratio: {ratio:.2f} (healer lines/s divided by SEC lines/s)")

    mixed = ShapeRun("mixed", args.lines, size, truth, results)
    print_shapes([mixed, *shaped])

    print("\nCounts vs generator truth:")
    status = 0
    for shape in [mixed, *shaped]:
        status = max(status, check_counts(shape))
    return status


@dataclass(frozen=True, slots=True)
class ShapeRun:
    """One generated log and the tools timed on it."""

    shape: str
    lines: int
    size: int
    truth: Counts
    results: list[Result]

    def result(self, tool: str) -> Result | None:
        return next((r for r in self.results if r.tool == tool and r.error is None), None)


def run_shape(
    name: str,
    lines: int,
    args: argparse.Namespace,
    *,
    workdir: Path,
    tmp: Path,
    sec_path: str | None,
) -> ShapeRun:
    """Generate ``name`` of gen_field_shapes.py and time healer and the prefiltered SEC."""
    log = workdir / f"{name}_{lines}_seed{args.seed}.log"
    with log.open("w", encoding="utf-8", newline="") as fh:
        truth_obj = gen_field_shapes.generate(fh, name, lines, args.seed)
    gen_field_shapes.truth_path(log).write_text(json.dumps(truth_obj, indent=2) + "\n")
    kinds_obj: Any = truth_obj["kinds"]
    size = log.stat().st_size
    print(f"Shape {name}: {lines:,} lines, {size:,} bytes", file=sys.stderr)
    healer_cmd = [sys.executable, "-m", "healer", "replay", "--format", "counts", str(log)]
    results = [measure("healer (default rules)", healer_cmd, args.runs, parse_healer)]
    if sec_path is not None:
        pre = write_prefiltered_rules(tmp)
        results.append(
            measure("sec + prefilter", sec_command(sec_path, pre, log), args.runs, parse_sec)
        )
    return ShapeRun(name, lines, size, dict(kinds_obj), results)


def print_shapes(shapes: list[ShapeRun]) -> None:
    """Per shape: healer against the prefiltered SEC; the headline is the lowest ratio."""
    print("\nPer log shape (healer with the shipped rules; SEC with its prefilter rule):\n")
    print(
        "| shape | lines | MB | healer s | healer lines/s | healer MB/s | SEC+prefilter s "
        "| ratio | healer CPU s | CPU ratio |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    ratios: list[tuple[float, str]] = []
    for shape in shapes:
        healer = shape.result("healer (default rules)")
        sec = shape.result("sec + prefilter")
        if healer is None:
            print(f"| {shape.shape} | {shape.lines:,} | {shape.size / 1e6:.1f} | failed |||||||")
            continue
        rate = shape.lines / healer.median
        mbs = shape.size / 1e6 / healer.median
        sec_s = f"{sec.median:.3f}" if sec else "n/a"
        ratio = f"{sec.median / healer.median:.2f}x" if sec else "n/a"
        cpu_ratio = f"{sec.cpu / healer.cpu:.2f}x" if sec else "n/a"
        if sec and shape.shape != "worst":
            ratios.append((sec.median / healer.median, shape.shape))
        print(
            f"| {shape.shape} | {shape.lines:,} | {shape.size / 1e6:.1f} | {healer.median:.3f} "
            f"| {fmt_rate(rate)} | {mbs:.0f} | {sec_s} | {ratio} | {healer.cpu:.3f} | {cpu_ratio} |"
        )
    if ratios:
        low, name = min(ratios)
        print(
            f"\nheadline: healer reads {low:.2f}x the lines/s of a prefiltered SEC on its "
            f"least favourable shape ({name}); 'worst' (worst-case lines) is shown beside it"
        )
        print(
            "(wall time; healer reads and scans ahead on a second thread, so its CPU time is "
            "shown too: SEC uses one core)"
        )


def check_counts(shape: ShapeRun) -> int:
    """Print the count check of one shape; 1 if healer's counts are wrong, 2 if SEC's."""
    status = 0
    for r in shape.results:
        label = f"{shape.shape}: {r.tool}"
        if r.error is not None or r.counts is None:
            print(f"- {label}: FAILED ({r.error})")
            status = 1 if r.tool.startswith("healer") else max(status, 2)
            continue
        diffs = diff_counts(shape.truth, r.counts)
        if not diffs:
            print(f"- {label}: all {len(shape.truth)} kinds match ({sum(shape.truth.values()):,})")
            continue
        print(f"- {label}: {len(diffs)} kind(s) differ")
        for kind, want, got in diffs:
            print(f"    {kind}: truth {want}, {r.tool} {got} ({got - want:+d})")
        status = 1 if r.tool.startswith("healer") else max(status, 2)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
