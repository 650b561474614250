"""Metrics on vs off in the event path, in one run: is counting (and scraping) free?

One seeded mixed log (``gen_mixed_log.py``) is read into events once. Then, in the same
process and in rotating order, the shipped rules decide on those events (the runner's
event path: engine step, decisions, phase changes, observer calls) with:

- ``off``: the null observer (what a runner without metrics does);
- ``on``: the Prometheus metrics observer (:class:`healer.metrics.HealerMetrics`);
- ``on + scrape``: the same, with its ``/metrics`` served on loopback and scraped by
  another thread every ``--scrape-every`` seconds (default 0.1 s: 150 times the rate of
  a 15 s Prometheus scrape interval, to make any contention visible).

It also times one scrape (rendering the exposition), which runs in healer's process
and holds the GIL meanwhile, and says what that is at a 15 s scrape interval.

The same is done for the whole replay (parse + decide, as ``healer replay``). Each
mode runs once untimed, then ``--runs`` times; the median wall time is reported with
events/s and the change against ``off``. The metrics' own counts are checked against
the number of events decided, so the modes do the same work.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import gen_mixed_log
from prometheus_client import generate_latest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from healer.engine import Engine  # noqa: E402
from healer.events import Event  # noqa: E402
from healer.metrics import HealerMetrics, MetricsServer  # noqa: E402
from healer.observe import NULL_OBSERVER, Observer  # noqa: E402
from healer.pipeline.replay import Input, replay  # noqa: E402
from healer.rulefiles import load_rules  # noqa: E402
from healer.runner import Runner  # noqa: E402

MODES = ("off", "on", "on + scrape")


class Scraper:
    """Fetches /metrics every ``every_s`` seconds until stopped; counts the scrapes."""

    def __init__(self, port: int, every_s: float) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"
        self.every_s = every_s
        self.scrapes = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while True:  # one scrape at once, then one per period
            with urllib.request.urlopen(self.url, timeout=10) as response:  # noqa: S310 - http, loopback
                response.read()
            self.scrapes += 1
            if self.stop.wait(self.every_s):
                return


def read_events(log: Path) -> list[Event]:
    items = replay([Input(log.name, str(log))], default_year=2026)
    return [i for i in items if isinstance(i, Event)]


def decide_only(events: list[Event], observer: Observer) -> None:
    runner = Runner(Engine(load_rules(ROOT / "rules")), observer=observer)
    for event in events:
        runner.ingest((event,))


def parse_and_decide(log: Path, observer: Observer) -> None:
    runner = Runner(Engine(load_rules(ROOT / "rules")), observer=observer)
    for item in replay([Input(log.name, str(log))], default_year=2026):
        if isinstance(item, Event):
            runner.ingest((item,))


def timed(
    work: Callable[[Observer], None], mode: str, every_s: float, events: int
) -> tuple[float, int]:
    """One run in one mode: wall seconds and scrapes made meanwhile."""
    if mode == "off":
        start = time.perf_counter()
        work(NULL_OBSERVER)
        return time.perf_counter() - start, 0
    metrics = HealerMetrics(load_rules(ROOT / "rules").policy)
    server = scraper = None
    if mode == "on + scrape":
        server = MetricsServer.start(metrics.registry, "127.0.0.1:0")
        scraper = Scraper(server.port, every_s)
        scraper.thread.start()
    start = time.perf_counter()
    work(metrics)
    took = time.perf_counter() - start
    scrapes = 0
    if scraper is not None and server is not None:
        scraper.stop.set()
        scraper.thread.join(timeout=30)
        scrapes = scraper.scrapes
        server.stop()
    [family] = metrics.events.collect()  # one counter family
    counted = sum(s.value for s in family.samples if s.name == "healer_events_total")
    assert counted == events, (counted, events)  # the same work in every mode
    return took, scrapes


def scrape_cost(events: list[Event]) -> None:
    """What one scrape costs the process (it holds the GIL while it renders)."""
    metrics = HealerMetrics(load_rules(ROOT / "rules").policy)
    decide_only(events, metrics)
    body = generate_latest(metrics.registry)
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    costs = []
    for _ in range(50):
        start = time.perf_counter()
        generate_latest(metrics.registry)
        costs.append(time.perf_counter() - start)
    one = statistics.median(costs)
    print(
        f"\none scrape: {one * 1000:.2f} ms to render {series} series ({len(body):,} bytes); "
        f"at a 15 s scrape interval {one / 15 * 100:.3f} % of one core"
    )


def bench(
    name: str, work: Callable[[Observer], None], events: int, runs: int, every_s: float
) -> None:
    walls: dict[str, list[float]] = {m: [] for m in MODES}
    scrapes = 0
    for mode in MODES:  # warm-up
        timed(work, mode, every_s, events)
    for r in range(runs):
        order = MODES[r % 3 :] + MODES[: r % 3]  # rotate: no mode always goes first
        for mode in order:
            took, made = timed(work, mode, every_s, events)
            walls[mode].append(took)
            scrapes += made
    base = statistics.median(walls["off"])
    print(f"\n{name}: {events:,} events, median of {runs} runs")
    print("| metrics | median s (min..max) | events/s | vs off |")
    print("|---|---|---|---|")
    for mode in MODES:
        median = statistics.median(walls[mode])
        span = f"{min(walls[mode]):.3f}..{max(walls[mode]):.3f}"
        change = (median / base - 1) * 100
        print(f"| {mode} | {median:.3f} ({span}) | {events / median:,.0f} | {change:+.1f} % |")
    print(f"({scrapes} scrapes in the 'on + scrape' runs)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--relevant-rate", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--scrape-every", type=float, default=0.1, metavar="SECONDS")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "mixed.log"
        with log.open("w", encoding="utf-8") as fh:
            gen_mixed_log.generate(fh, args.lines, args.seed, args.relevant_rate)
        events = read_events(log)
        print(
            f"log: {args.lines:,} lines, {len(events):,} events "
            f"(relevant rate {args.relevant_rate}, seed {args.seed}); "
            f"Python {sys.version.split()[0]}"
        )
        bench(
            "decide (runner event path only)",
            lambda o: decide_only(events, o),
            len(events),
            args.runs,
            args.scrape_every,
        )
        scrape_cost(events)
        bench(
            "replay (parse + decide, as healer replay)",
            lambda o: parse_and_decide(log, o),
            len(events),
            args.runs,
            args.scrape_every,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
