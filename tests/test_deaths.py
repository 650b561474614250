"""One death, one healing: reports of a daemon's death, in any order, decide once.

Live, healer numbers its daemons (``origin.generation``) and journals when each
started. These tests feed the pure engine the reports a real death produces (the
daemon's own "client disconnected" line, its exit, the VMM's "backend disconnected",
a journald copy) in every order and with the delays live reading gives them, and
count what it decides. The expectations are hand-written: one respawn and one
remount per death, two for two deaths, none for a dead connection drained.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healer.engine import Action, Decision, Engine, Output, Phase, Transition
from healer.events import (
    BackendDisconnected,
    Event,
    Origin,
    VirtiofsdClientConnected,
    VirtiofsdClientDisconnected,
    VirtiofsdExited,
    VirtiofsdStarted,
)
from healer.rulefiles import load_rules

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 12, 1, tzinfo=UTC)
ENGINE = Engine(load_rules(ROOT / "rules"))
_line = itertools.count(1)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _daemon(
    kind: type[Event], generation: int, seconds: float, pid: int, source: str, **fields: Any
) -> Event:
    n = next(_line)
    return kind(
        time=at(seconds),
        source=source,
        offset=n,
        line=n,
        share="fs0",
        origin=Origin(program="virtiofsd", pid=pid, generation=generation),
        **fields,
    )


def started(generation: int, seconds: float, pid: int | None = None) -> Event:
    n = next(_line)
    return VirtiofsdStarted(
        time=at(seconds),
        source="healer:fs0",
        offset=n,
        line=n,
        share="fs0",
        origin=Origin(program="virtiofsd", pid=pid or 100 + generation, generation=generation),
    )


def connected(generation: int, seconds: float, pid: int | None = None) -> Event:
    return _daemon(VirtiofsdClientConnected, generation, seconds, pid or 100 + generation, "stderr")


def lost(generation: int, seconds: float, source: str = "stderr") -> Event:
    return _daemon(VirtiofsdClientDisconnected, generation, seconds, 100 + generation, source)


def exited(generation: int, seconds: float, pid: int | None = None) -> Event:
    """Killed (SIGKILL), as a fault kills it."""
    return _daemon(
        VirtiofsdExited, generation, seconds, pid or 100 + generation, "holder", signal="SIGKILL"
    )


def left(generation: int, seconds: float) -> Event:
    """Exited 0: its client left (virtiofsd serves one client, then ends)."""
    return _daemon(VirtiofsdExited, generation, seconds, 100 + generation, "holder", status=0)


def vmm_disconnected(seconds: float) -> Event:
    n = next(_line)
    return BackendDisconnected(
        time=at(seconds),
        source="ch.log",
        offset=n,
        line=n,
        share="fs0",
        origin=Origin(program="cloud-hypervisor"),
        socket="/run/fs0.sock",
    )


def run(items: list[Event]) -> tuple[list[Output], Phase]:
    state = ENGINE.initial()
    outputs: list[Output] = []
    for item in items:
        state, outs = ENGINE.step(state, item)
        outputs += outs
    state, outs = ENGINE.finish(state)
    return outputs + outs, state.shares["fs0"].phase


def healings(outputs: list[Output]) -> dict[str, int]:
    counts = {"respawn": 0, "remount": 0}
    for out in outputs:
        if isinstance(out, Decision) and out.suppressed is None:
            if out.action == Action.RESPAWN:
                counts["respawn"] += 1
            elif out.action == Action.REMOUNT:
                counts["remount"] += 1
    return counts


def incidents(outputs: list[Output]) -> list[str]:
    return [o.incident for o in outputs if isinstance(o, Transition) and o.after == Phase.FAILING]


# One death of daemon 1 at 5 s: its reports, and what healer does meanwhile (respawns
# daemon 2 once something decided, the VMM reconnects to it).
ONE_DEATH = (
    "exit",
    "lost",
    "vmm",
    "journald copy",
)


@settings(max_examples=300, deadline=None)
@given(
    order=st.permutations(ONE_DEATH),
    respawned_after=st.integers(min_value=1, max_value=4),
    connect_after=st.integers(min_value=0, max_value=4),
    vmm_delay=st.floats(min_value=0.0, max_value=0.004),
)
def test_any_order_of_one_deaths_reports_is_one_healing(
    order: tuple[str, ...], respawned_after: int, connect_after: int, vmm_delay: float
) -> None:
    """Whatever order the reports of one death are read in, and wherever healer's
    respawn and the VMM's reconnect fall among them: one incident, one respawn, one
    remount, and the share healthy again."""
    reports = {
        "exit": exited(1, 5.0),
        "lost": lost(1, 5.0001),
        "vmm": vmm_disconnected(5.0002 + vmm_delay),
        "journald copy": lost(1, 5.0001, source="journal"),
    }
    items = [started(1, 0.0), connected(1, 0.01)]
    tail: list[Event] = [reports[name] for name in order]
    # healer starts daemon 2 only after a report decided; the VMM connects after that
    respawn = [started(2, 5.008)]
    tail[respawned_after:respawned_after] = respawn
    index = tail.index(respawn[0]) + 1 + connect_after
    tail.insert(min(index, len(tail)), connected(2, 5.012))
    outputs, phase = run(items + tail)
    assert healings(outputs) == {"respawn": 1, "remount": 1}
    assert incidents(outputs) == ["fs0#1"]
    assert phase == Phase.HEALTHY


@settings(max_examples=200, deadline=None)
@given(order=st.permutations(("exit", "lost", "vmm")), gap=st.floats(0.6, 4.0))
def test_two_deaths_are_two_healings(order: tuple[str, ...], gap: float) -> None:
    """A second real death inside the dedupe window (kills 1.3 s apart) is healed too."""
    first = [exited(1, 5.0), lost(1, 5.0001), vmm_disconnected(5.0002)]
    second_at = 5.012 + gap
    reports = {
        "exit": exited(2, second_at),
        "lost": lost(2, second_at + 0.0001),
        "vmm": vmm_disconnected(second_at + 0.0002),
    }
    items = [started(1, 0.0), connected(1, 0.01), *first, started(2, 5.008), connected(2, 5.012)]
    items += [reports[name] for name in order]
    items += [started(3, second_at + 0.008), connected(3, second_at + 0.012)]
    outputs, phase = run(items)
    assert healings(outputs) == {"respawn": 2, "remount": 2}
    assert incidents(outputs) == ["fs0#1", "fs0#2"]
    assert phase == Phase.HEALTHY


def test_a_stale_connect_of_a_dead_daemon_is_not_its_successors_recovery() -> None:
    """The Rust race: daemon 1's "Client connected" line is read only after it died and
    daemon 2 started. It must not close the incident for daemon 2, and daemon 2's own
    death 1.3 s later (before any client came) is decided, not taken for the first."""
    items = [
        started(1, 0.0),
        exited(1, 5.0),  # killed 10 ms after the VMM connected; the line comes late
        started(2, 5.008),
        connected(1, 4.99),  # daemon 1's line, read now
        exited(2, 6.3),
        started(3, 6.31),
        connected(3, 6.32),
    ]
    outputs, phase = run(items)
    assert healings(outputs)["respawn"] == 2
    transitions = [(o.before, o.after) for o in outputs if isinstance(o, Transition)]
    # one incident: opened by the first kill, recovered only by daemon 3's client
    assert transitions == [
        (Phase.HEALTHY, Phase.FAILING),
        (Phase.FAILING, Phase.RECOVERING),
        (Phase.RECOVERING, Phase.HEALTHY),
    ]
    recovered = [o for o in outputs if isinstance(o, Transition) and o.after == Phase.HEALTHY]
    assert recovered[0].time == at(6.32).timestamp()
    assert phase == Phase.HEALTHY


def test_a_reused_pid_is_a_new_daemon() -> None:
    """Daemon 2 got daemon 1's pid (a container's pid namespace restarted): its death
    is its own."""
    items = [
        started(1, 0.0, pid=7),
        connected(1, 0.01, pid=7),
        exited(1, 5.0, pid=7),
        started(2, 5.01, pid=7),
        connected(2, 5.02, pid=7),
        exited(2, 7.0, pid=7),
    ]
    outputs, _ = run(items)
    assert healings(outputs) == {"respawn": 2, "remount": 2}


def test_a_vmm_line_written_before_the_new_daemon_started_decides_nothing() -> None:
    """Read after daemon 2 took over, the VMM's line about daemon 1 is stale."""
    items = [
        started(1, 0.0),
        connected(1, 0.01),
        exited(1, 5.0),
        started(2, 5.008),
        connected(2, 5.012),
        vmm_disconnected(5.0003),
    ]
    outputs, phase = run(items)
    assert healings(outputs) == {"respawn": 1, "remount": 1}
    assert phase == Phase.HEALTHY


def test_a_vmm_line_alone_decides_when_the_serving_daemon_is_known() -> None:
    """The VMM's report read first is the first report of daemon 1's death."""
    items = [started(1, 0.0), connected(1, 0.01), vmm_disconnected(5.0)]
    outputs, _ = run(items)
    (respawn,) = [o for o in outputs if isinstance(o, Decision) and o.action == Action.RESPAWN]
    assert respawn.cause is not None
    assert (respawn.cause.kind, respawn.cause.generation) == ("BackendDisconnected", 1)


def test_dead_connections_are_drained_without_backoff_incident_or_storm() -> None:
    """Probes (connect and close) reach a listening daemon again and again: each is
    respawned at once, none opens an incident, none counts towards a storm."""
    items: list[Event] = [started(1, 0.0)]
    for n in range(1, 8):
        t = 10.0 * n
        items += [connected(n, t), lost(n, t + 0.002), left(n, t + 0.003)]
        items.append(started(n + 1, t + 0.01))
    outputs, phase = run(items)
    respawns = [o for o in outputs if isinstance(o, Decision) and o.action == Action.RESPAWN]
    assert len(respawns) == 7
    assert all(d.not_before == d.time for d in respawns)  # at once
    assert all(d.note is not None and d.note.startswith("stale connection") for d in respawns)
    assert all(d.incident == "fs0#0" for d in respawns)  # no incident
    assert healings(outputs)["remount"] == 0
    assert not [o for o in outputs if isinstance(o, Decision) and o.action == "open_circuit"]
    assert phase == Phase.HEALTHY


def test_a_dead_connection_ahead_of_the_vmm_is_not_a_recovery() -> None:
    """After a kill, the next daemon accepts a dead connection first: its connect is no
    recovery and its death no new incident; the VMM's session after it is."""
    items = [
        started(1, 0.0),
        connected(1, 0.01),
        exited(1, 5.0),
        started(2, 5.008),
        connected(2, 5.009),  # a probe queued before the VMM
        lost(2, 5.011),
        left(2, 5.012),
        started(3, 5.02),
        connected(3, 5.021),  # the VMM
    ]
    outputs, phase = run(items)
    respawns = [o for o in outputs if isinstance(o, Decision) and o.action == Action.RESPAWN]
    assert [d.attempt for d in respawns] == [0, 0]
    assert respawns[1].note is not None
    assert respawns[1].not_before == respawns[1].time
    recovered = [o for o in outputs if isinstance(o, Transition) and o.after == Phase.HEALTHY]
    assert [o.time for o in recovered] == [at(5.021).timestamp()]
    assert incidents(outputs) == ["fs0#1"]
    assert phase == Phase.HEALTHY


def test_a_daemon_killed_soon_after_its_client_connected_is_a_death_not_a_drain() -> None:
    """Killed 20 ms after the VMM connected: an ordinary death (respawn and remount),
    although its session was short; only a clean exit marks a dead connection."""
    items = [started(1, 0.0), connected(1, 0.01), lost(1, 0.03), exited(1, 0.03)]
    outputs, _ = run(items)
    assert healings(outputs) == {"respawn": 1, "remount": 1}
    respawn = next(o for o in outputs if isinstance(o, Decision) and o.action == Action.RESPAWN)
    assert respawn.note is None
    assert respawn.cause is not None
    assert respawn.cause.kind == "VirtiofsdExited"  # the lost-client line waited for it


def test_a_session_that_lasted_is_a_recovery_and_its_end_a_death() -> None:
    items = [started(1, 0.0), connected(1, 0.01), exited(1, 0.9)]
    outputs, _ = run(items)
    respawns = [o for o in outputs if isinstance(o, Decision) and o.action == Action.RESPAWN]
    assert len(respawns) == 1
    assert respawns[0].note is None
    assert incidents(outputs) == ["fs0#1"]


@pytest.mark.parametrize("limit_hit_at", [11])
def test_drains_beyond_the_limit_count_as_deaths(limit_hit_at: int) -> None:
    """A client that connects and leaves forever is not drained forever: after
    stale_limit (10) in a minute, its daemon's deaths are ordinary again."""
    items: list[Event] = [started(1, 0.0)]
    for n in range(1, limit_hit_at + 1):
        t = 1.0 * n
        items += [connected(n, t), left(n, t + 0.002), started(n + 1, t + 0.01)]
    outputs, _ = run(items)
    respawns = [o for o in outputs if isinstance(o, Decision) and o.action == Action.RESPAWN]
    assert [d.note is not None for d in respawns] == [True] * 10 + [False]
