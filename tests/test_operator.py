"""Operator commands in the pure core: pause, resume, reset, restart.

Each is an input like an event: the journal keeps it (an operator record) and a fold
replays it to the same state. Expectations written from the shipped rules by hand.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from healer.engine import Action, Command, Decision, Engine, Phase, Transition
from healer.events import Event, Origin, VirtiofsdExited, VirtiofsdStarted
from healer.fold import fold
from healer.journal import DecisionRecord, EventRecord, OperatorRecord, Record
from healer.rulefiles import load_rules

ROOT = Path(__file__).parent.parent
T0 = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def started(seconds: float, generation: int) -> Event:
    origin = Origin(program="virtiofsd", pid=100 + generation, generation=generation)
    return VirtiofsdStarted(
        time=at(seconds),
        source="healer:fs0",
        offset=generation * 8,
        line=0,
        share="fs0",
        origin=origin,
    )


def exited(seconds: float, generation: int) -> Event:
    origin = Origin(program="virtiofsd", pid=100 + generation, generation=generation)
    return VirtiofsdExited(
        time=at(seconds),
        source="healer:fs0",
        offset=generation * 8 + 1,
        line=0,
        share="fs0",
        origin=origin,
        status=None,
        signal="SIGKILL",
    )


def command(seconds: float, what: str) -> Command:
    return Command(T0.timestamp() + seconds, what, "fs0", uid=1000)


def run(items: list[Event | Command]) -> tuple[Engine, list[Decision | Transition]]:
    engine = Engine(load_rules(ROOT / "rules"))
    state = engine.initial()
    out: list[Decision | Transition] = []
    for item in items:
        state, step = engine.step(state, item)
        out += step
    return engine, out


def decided(out: list[Decision | Transition]) -> list[tuple[Action, str | None]]:
    return [(d.action, d.suppressed) for d in out if isinstance(d, Decision)]


def test_a_paused_share_is_not_healed_and_resume_brings_its_daemon_back() -> None:
    _, out = run([started(0, 1), command(1, "pause"), exited(2, 1), command(3, "resume")])
    assert decided(out) == [
        (Action.RESPAWN, "paused by the operator"),
        (Action.REMOUNT, "paused by the operator"),
        (Action.ENSURE, None),  # resume: the daemon that died meanwhile comes back
    ]
    ensure = [d for d in out if isinstance(d, Decision)][-1]
    assert ensure.cause is not None
    assert (ensure.cause.kind, ensure.cause.source) == ("operator resume", "operator:uid=1000")


def test_reset_closes_an_open_circuit_and_clears_the_backoff() -> None:
    deaths: list[Event | Command] = []
    for n in range(1, 6):  # five deaths in 60 s: the restart storm opens the circuit
        deaths += [started(n * 2, n), exited(n * 2 + 1, n)]
    _, out = run([*deaths, command(20, "reset")])
    phases = [t.after for t in out if isinstance(t, Transition)]
    assert Phase.CIRCUIT_OPEN in phases
    assert phases[-1] == Phase.RECOVERING  # reset: failing again, and an ensure decided
    assert phases[-2] == Phase.FAILING
    last = [d for d in out if isinstance(d, Decision)][-1]
    assert (last.action, last.suppressed, last.rule) == (Action.ENSURE, None, "operator-reset")


def test_restart_respawns_once_and_the_daemon_s_end_is_no_second_healing() -> None:
    _, out = run([started(0, 1), command(10, "restart"), exited(10.1, 1), started(10.2, 2)])
    assert decided(out) == [(Action.RESPAWN, None)]
    (restart,) = [d for d in out if isinstance(d, Decision)]
    assert restart.note == "restarted by the operator"
    assert restart.not_before == restart.time  # no backoff for an operator's restart


def test_a_fold_replays_the_commands_to_the_same_state() -> None:
    items: list[Event | Command] = [started(0, 1), command(1, "pause"), exited(2, 1)]
    engine, _ = run(items)
    live = engine.initial()
    records: list[Record] = []
    for item in items:
        live, outs = engine.step(live, item)
        if isinstance(item, Command):
            records.append(OperatorRecord(item.command, item.share, item.uid, 7, time=item.time))
        else:
            records.append(EventRecord(item))
        records += [DecisionRecord(o) for o in outs if isinstance(o, Decision)]
    folded = fold(engine, None, records)
    assert folded.state.shares["fs0"].paused
    assert folded.state == live
