"""healer's Prometheus metrics, in a registry of their own, fed through the observer.

:class:`HealerMetrics` owns a fresh :class:`~healer.metrics.exposition.HealerRegistry`
(never the global one: a test, a replay and a live watchdog each get their own) and
implements :class:`healer.observe.Observer`. Counters and histograms are updated in
the event path; the per-share gauges (up, phase, circuit, backoff) are computed from
the latest engine state when Prometheus scrapes, so the event path only stores a
reference to the immutable state.

Names follow the Prometheus naming guide: the ``healer_`` prefix, base units
(``_seconds``), ``_total`` on counters, ``_timestamp_seconds`` for points in time,
attempts and failures as separate counters. Labels are bounded: ``share`` by the
configuration (live, unknown names are reported as configured aliases map them),
``kind`` by the event kinds, ``action`` by the actions, ``source`` by the configured
logs (or the replayed files).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping

from prometheus_client import Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from healer import __version__
from healer.engine import Decision, EngineState, Phase, Transition
from healer.engine.core import next_backoff
from healer.engine.rules import ACTIONS, Policy, RuleSet
from healer.engine.trust import RATE_LIMITED
from healer.events import KINDS, Event
from healer.metrics.exposition import HealerRegistry

__all__ = [
    "DETECTION_BUCKETS",
    "EXPORTED",
    "PHASES",
    "RECOVERY_BUCKETS",
    "HealerMetrics",
    "JournalProbe",
    "LimitHits",
    "failure_kinds",
]

RECOVERY_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
"""Failure detected -> healthy again: a respawn takes well under a second, a re-add
up to cloud-hypervisor's 60 s connect window, a circuit retry 300 s."""

DETECTION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
"""Line read -> decided: milliseconds normally; seconds mean the loop is behind."""

PHASES = (Phase.HEALTHY, Phase.FAILING, Phase.RECOVERING, Phase.CIRCUIT_OPEN)

_FAILED = frozenset({"failed", "timed_out"})

EXPORTED: dict[str, str] = {
    "healer_build_info": "gauge",
    "healer_share_info": "gauge",
    "healer_start_time_seconds": "gauge",
    "healer_events_total": "counter",
    "healer_log_lines_total": "counter",
    "healer_unparsed_lines_total": "counter",
    "healer_failures_total": "counter",
    "healer_recoveries_total": "counter",
    "healer_virtiofsd_restarts_total": "counter",
    "healer_actions_total": "counter",
    "healer_action_failures_total": "counter",
    "healer_decisions_suppressed_total": "counter",
    "healer_journal_records_total": "counter",
    "healer_journal_write_errors_total": "counter",
    "healer_journal_last_write_timestamp_seconds": "gauge",
    "healer_journal_degraded": "gauge",
    "healer_journal_writable": "gauge",
    "healer_journal_available_bytes": "gauge",
    "healer_recovery_duration_seconds": "histogram",
    "healer_detection_latency_seconds": "histogram",
    "healer_last_recovery_timestamp_seconds": "gauge",
    "healer_share_up": "gauge",
    "healer_share_phase": "gauge",
    "healer_circuit_open": "gauge",
    "healer_backoff_seconds": "gauge",
    "healer_virtiofsd_running": "gauge",
    "healer_share_paused": "gauge",
    "healer_limit_hits_total": "counter",
}
"""Every metric family healer exports, with its type (docs/metrics.md lists them)."""


def failure_kinds(rules: RuleSet) -> list[str]:
    """The event kinds a warning or critical rule reacts to: what can count as a failure."""
    return sorted({kind for rule in rules.rules if rule.severity != "info" for kind in rule.on})


class HealerMetrics:
    """The metrics of one healer process (or one replay), as an observer.

    ``shares`` maps every name a share goes by in events (configured name, tag,
    socket) to the label it gets, and is the set of shares whose series exist from
    the start. ``supervised`` shares are up only while their virtiofsd runs.
    ``journal`` (live) is the journal directory, probed at each scrape.
    ``failure_kinds`` (:func:`failure_kinds`) get a 0 series per known share from the
    start: a counter that first appears at 1 is invisible to ``increase()``.
    ``clock`` is the wall clock for timestamps of healer's own doing (journal writes,
    start time); event times come from the events.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        shares: Mapping[str, str] | None = None,
        supervised: Iterable[str] = (),
        sources: Iterable[str] = (),
        journal: str | None = None,
        failure_kinds: Iterable[str] = (),
        vms: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registry = HealerRegistry(auto_describe=True)
        self.policy = policy
        self.clock = clock
        self._failure_kinds = tuple(sorted(set(failure_kinds)))
        self._aliases = dict(shares or {})
        self._known = sorted(set(self._aliases.values()))
        self.supervised = frozenset(supervised)
        self._running: dict[str, int] = {}
        self._started: set[str] = set()
        self._onset: dict[str, float] = {}
        self._state = EngineState()
        self._at = float("-inf")
        self._lock = threading.Lock()  # the scrape thread reads what the loop writes
        r = self.registry

        Info("healer_build", "healer's version and the Python it runs on", registry=r).info(
            {"version": __version__, "python": sys.version.split()[0]}
        )
        share_info = Gauge(
            "healer_share_info",
            "1 per configured share, naming its VM (join on share for a vm label)",
            ["share", "vm"],
            registry=r,
        )
        for share, vm in sorted((vms or {}).items()):
            share_info.labels(share, vm).set(1)
        self.start_time = Gauge("healer_start_time_seconds", "Unix time healer started", registry=r)
        self.start_time.set(clock())
        self.events = Counter(
            "healer_events_total", "Typed events that entered the engine", ["kind"], registry=r
        )
        self.log_lines = Counter("healer_log_lines_total", "Log lines read", ["source"], registry=r)
        self.unparsed_lines = Counter(
            "healer_unparsed_lines_total",
            "Log lines no parser recognised (not blank, not part of an event)",
            ["source"],
            registry=r,
        )
        self.failures = Counter(
            "healer_failures_total",
            "Failure events a warning or critical rule decided on, by event kind",
            ["share", "kind"],
            registry=r,
        )
        self.recoveries = Counter(
            "healer_recoveries_total",
            "Shares healthy again after an incident",
            ["share"],
            registry=r,
        )
        self.restarts = Counter(
            "healer_virtiofsd_restarts_total",
            "virtiofsd started again for a share (live), or respawns that would run (replay)",
            ["share"],
            registry=r,
        )
        self.actions = Counter(
            "healer_actions_total",
            "Actions attempted (replay: actions that would run)",
            ["action", "share"],
            registry=r,
        )
        self.action_failures = Counter(
            "healer_action_failures_total",
            "Actions that failed or timed out",
            ["action", "share"],
            registry=r,
        )
        self.suppressed = Counter(
            "healer_decisions_suppressed_total",
            "Healing decisions not run: the circuit is open, or the policy forbids them",
            ["action", "share"],
            registry=r,
        )
        self.journal_records = Counter(
            "healer_journal_records_total", "Records written to the journal", registry=r
        )
        self.journal_errors = Counter(
            "healer_journal_write_errors_total", "Journal writes that failed", registry=r
        )
        self.journal_last = Gauge(
            "healer_journal_last_write_timestamp_seconds",
            "Unix time of the last successful journal write",
            registry=r,
        )
        self.journal_degraded = Gauge(
            "healer_journal_degraded",
            "1 while journal records wait in memory (only respawns run meanwhile)",
            registry=r,
        )
        self.recovery = Histogram(
            "healer_recovery_duration_seconds",
            "Event time from a share leaving healthy to healthy again",
            ["share"],
            buckets=RECOVERY_BUCKETS,
            registry=r,
        )
        self.detection = Histogram(
            "healer_detection_latency_seconds",
            "Live: a log line read -> the decision it caused",
            buckets=DETECTION_BUCKETS,
            registry=r,
        )
        self.last_recovery = Gauge(
            "healer_last_recovery_timestamp_seconds",
            "Event time (Unix) of the share's last recovery",
            ["share"],
            registry=r,
        )
        r.register(_ShareGauges(self))
        if journal is not None:
            r.register(JournalProbe(journal))
        # The owner of the bounds (the watchdog) replaces this with its own counts.
        self.limits: Callable[[], Mapping[str, int]] = dict
        self.source_limited = 0  # decisions the per-source limit suppressed
        r.register(LimitHits(lambda: {**self.limits(), "source_decisions": self.source_limited}))

        for kind in KINDS:  # known label values exist from the start (no missing series)
            self.events.labels(kind)
        for source in sources:
            self.log_lines.labels(source)
            self.unparsed_lines.labels(source)
        self._inited: set[str] = set()
        self._children: dict[tuple[Counter, tuple[str, ...]], Counter] = {}
        for share in self._known:
            self._init_share(share)
        self._by_kind = {kind: self.events.labels(kind) for kind in KINDS}

    def _init_share(self, share: str) -> None:
        self._inited.add(share)
        self.recoveries.labels(share)
        self.restarts.labels(share)
        self.recovery.labels(share)
        for action in ACTIONS:
            self.actions.labels(action, share)
            self.action_failures.labels(action, share)
            self.suppressed.labels(action, share)
        for kind in self._failure_kinds:
            self.failures.labels(share, kind)

    def _child(self, metric: Counter, *labels: str) -> Counter:
        """A labelled child, cached: ``labels()`` validates and locks on every call."""
        key = (metric, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def label(self, share: str) -> str:
        """The ``share`` label of a name the engine uses (tag, socket, 'default')."""
        label = self._aliases.get(share, share)
        if label not in self._inited:  # a share first named by a log (replay)
            self._init_share(label)
        return label

    # --- Observer -----------------------------------------------------------------

    def lines(self, source: str, lines: int, unparsed: int) -> None:
        if lines:
            self.log_lines.labels(source).inc(lines)
        if unparsed:
            self.unparsed_lines.labels(source).inc(unparsed)

    def event(self, event: Event) -> None:
        child = self._by_kind.get(event.kind)
        if child is not None:
            child.inc()

    def failure(self, share: str, kind: str) -> None:
        self._child(self.failures, self.label(share), kind).inc()

    def detected(self, seconds: float) -> None:
        self.detection.observe(max(0.0, seconds))

    def decision(self, decision: Decision) -> None:
        if decision.suppressed is not None:
            self._child(self.suppressed, decision.action, self.label(decision.share)).inc()
            if decision.suppressed.startswith(RATE_LIMITED):
                self.source_limited += 1

    def transition(self, transition: Transition) -> None:
        share = self.label(transition.share)
        if transition.before == Phase.HEALTHY:
            self._onset[share] = transition.time
        elif transition.after == Phase.HEALTHY:
            self.recoveries.labels(share).inc()
            self.last_recovery.labels(share).set(transition.time)
            onset = self._onset.pop(share, None)
            if onset is not None:  # an incident that began before a restart is not timed
                self.recovery.labels(share).observe(max(0.0, transition.time - onset))

    def action_started(self, decision: Decision) -> None:
        self._child(self.actions, decision.action, self.label(decision.share)).inc()

    def action_finished(
        self, decision: Decision, status: str, seconds: float | None, detail: str = ""
    ) -> None:
        share = self.label(decision.share)
        if status == "would_run":  # a replay: what would have been attempted
            self._child(self.actions, decision.action, share).inc()
            if decision.action == "respawn_virtiofsd":
                self._child(self.restarts, share).inc()
        elif status in _FAILED:
            self._child(self.action_failures, decision.action, share).inc()

    def state(self, state: EngineState, at: float) -> None:
        self._state, self._at = state, at  # immutable: the scrape reads it as it is

    def virtiofsd_started(self, share: str, pid: int) -> None:
        with self._lock:
            self._running[share] = pid
            again = share in self._started
            self._started.add(share)
        if again:
            self.restarts.labels(share).inc()

    def virtiofsd_exited(self, share: str, pid: int) -> None:
        with self._lock:
            if self._running.get(share) == pid:
                del self._running[share]

    def journal_written(self, records: int) -> None:
        self.journal_records.inc(records)
        self.journal_last.set(self.clock())
        self.journal_degraded.set(0)  # a write went through: what waited went with it

    def journal_failed(self, error: OSError) -> None:
        self.journal_errors.inc()
        self.journal_degraded.set(1)

    # --- scrape side --------------------------------------------------------------

    def share_gauges(self) -> dict[str, tuple[Phase, bool, float]]:
        """Per share label: phase, circuit open, backoff of the next respawn (seconds)."""
        state, at = self._state, self._at
        out: dict[str, tuple[Phase, bool, float]] = {}
        names = set(state.shares) | set(self._known)
        for name in sorted(names):
            label = self.label(name)
            share = state.shares.get(name)
            phase = share.phase if share is not None else Phase.HEALTHY
            backoff = 0.0 if share is None else next_backoff(self.policy, name, share, at)
            before = out.get(label)
            if before is not None:  # several names of one share: the worst of them
                worst = max(before[0], phase, key=PHASES.index)
                phase = worst
                backoff = max(backoff, before[2])
            out[label] = (phase, phase == Phase.CIRCUIT_OPEN, backoff)
        return out

    def paused(self) -> set[str]:
        """The share labels an operator paused (`healer pause`)."""
        return {self.label(n) for n, s in self._state.shares.items() if s.paused}

    def running(self) -> dict[str, int]:
        with self._lock:
            return dict(self._running)


class _ShareGauges(Collector):
    """Per-share gauges, computed from the latest engine state at scrape time."""

    def __init__(self, metrics: HealerMetrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return self._families({}, {})

    def collect(self) -> Iterator[GaugeMetricFamily]:
        return self._families(self.metrics.share_gauges(), self.metrics.running())

    def _families(
        self, shares: dict[str, tuple[Phase, bool, float]], running: dict[str, int]
    ) -> Iterator[GaugeMetricFamily]:
        supervised = self.metrics.supervised
        up = GaugeMetricFamily(
            "healer_share_up",
            "1 when the share is healthy (and, supervised, its virtiofsd runs)",
            labels=["share"],
        )
        phase = GaugeMetricFamily(
            "healer_share_phase", "1 for the share's current phase", labels=["share", "phase"]
        )
        circuit = GaugeMetricFamily(
            "healer_circuit_open", "1 while the share's circuit is open", labels=["share"]
        )
        backoff = GaugeMetricFamily(
            "healer_backoff_seconds",
            "Delay the share's next respawn would wait (0: at once)",
            labels=["share"],
        )
        daemon = GaugeMetricFamily(
            "healer_virtiofsd_running",
            "1 while healer's virtiofsd for the share runs (supervised shares)",
            labels=["share"],
        )
        for share, (current, is_open, delay) in shares.items():
            alive = share not in supervised or share in running
            up.add_metric([share], 1.0 if current == Phase.HEALTHY and alive else 0.0)
            for name in PHASES:
                phase.add_metric([share, name], 1.0 if name == current else 0.0)
            circuit.add_metric([share], 1.0 if is_open else 0.0)
            backoff.add_metric([share], delay)
        for share in sorted(supervised):
            daemon.add_metric([share], 1.0 if share in running else 0.0)
        paused = GaugeMetricFamily(
            "healer_share_paused",
            "1 while an operator has paused the share's healing (healer pause)",
            labels=["share"],
        )
        held = self.metrics.paused() if shares else set()
        for share in shares:
            paused.add_metric([share], 1.0 if share in held else 0.0)
        yield from (up, phase, circuit, backoff, daemon, paused)


class JournalProbe(Collector):
    """Can the journal be written? Looked at when Prometheus scrapes, never in the loop.

    The directory must exist, be writable by this process and sit on a filesystem
    that is not mounted read-only; ``available_bytes`` is what an unprivileged
    writer has left there. An unreadable directory reads as not writable: a scrape
    never fails because of it.
    """

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"JournalProbe({self.path!r})"

    def describe(self) -> Iterator[GaugeMetricFamily]:
        return self._families(None, None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            stat = os.statvfs(self.path)
        except OSError:
            return self._families(False, None)
        writable = os.access(self.path, os.W_OK) and not stat.f_flag & os.ST_RDONLY
        return self._families(writable, stat.f_bavail * stat.f_frsize)

    @staticmethod
    def _families(writable: bool | None, available: int | None) -> Iterator[GaugeMetricFamily]:
        ok = GaugeMetricFamily(
            "healer_journal_writable",
            "1 when the journal directory can be written (exists, writable, not read-only)",
        )
        free = GaugeMetricFamily(
            "healer_journal_available_bytes",
            "Bytes left for healer on the journal's filesystem",
        )
        if writable is not None:
            ok.add_metric([], 1.0 if writable else 0.0)
        if available is not None:
            free.add_metric([], float(available))
        yield from (ok, free)


class LimitHits(Collector):
    """``healer_limit_hits_total{limit}``: how often each bound was reached.

    Every queue, line length and retry has a limit; what hit one is counted where it
    happens (a plain integer in the owner, no lock on the hot path) and read here at
    scrape time through ``counts``, which returns ``{limit: hits}`` for fixed names.
    """

    def __init__(self, counts: Callable[[], Mapping[str, int]]) -> None:
        self.counts = counts

    def describe(self) -> Iterator[CounterMetricFamily]:
        yield self._family({})

    def collect(self) -> Iterator[CounterMetricFamily]:
        yield self._family(self.counts())

    @staticmethod
    def _family(counts: Mapping[str, int]) -> CounterMetricFamily:
        family = CounterMetricFamily(
            "healer_limit_hits",
            "Times a configured bound was reached (input queue full, action queue full, "
            "line cut at its length limit, line dated ahead of its read time)",
            labels=["limit"],
        )
        for limit, hits in sorted(counts.items()):
            family.add_metric([limit], float(hits))
        return family
