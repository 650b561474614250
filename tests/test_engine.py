"""The decision core: correlation windows at their edges, backoff, circuit, determinism."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import EXCERPTS, parse_excerpt
from hypothesis import given, settings
from hypothesis import strategies as st

from healer.engine import (
    Action,
    Decision,
    Engine,
    Phase,
    Tick,
    Transition,
    backoff_delay,
)
from healer.engine.rules import Policy
from healer.events import (
    BackendConnectTimeout,
    Event,
    FsDeviceCreating,
    Origin,
    VirtiofsdClientConnected,
    VirtiofsdExited,
    VirtiofsdListening,
    VmReset,
)
from healer.journal.records import state_from_dict, state_to_dict
from healer.rulefiles import load_rules

ROOT = Path(__file__).parent.parent
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def exited(seconds: float, line: int = 1, share: str | None = None) -> Event:
    return VirtiofsdExited(time=at(seconds), source="log", offset=line * 10, line=line, share=share)


def connected(seconds: float, line: int = 1) -> Event:
    return VirtiofsdClientConnected(time=at(seconds), source="log", offset=line * 10, line=line)


def engine_with(tmp_path: Path, text: str) -> Engine:
    (tmp_path / "r.toml").write_text(text)
    return Engine(load_rules(tmp_path))


def run(engine: Engine, items: Sequence[Event | Tick]) -> list[Decision | Transition]:
    """The outputs of ``items`` as a replay sees them, the end of input included (a
    connect still within its stale-session wait counts as the recovery then)."""
    state = engine.initial()
    outputs: list[Decision | Transition] = []
    for item in items:
        state, outs = engine.step(state, item)
        outputs += outs
    state, outs = engine.finish(state)
    return outputs + outs


def decisions(outputs: list[Decision | Transition]) -> list[Decision]:
    return [o for o in outputs if isinstance(o, Decision)]


THRESHOLD = """
[policy]
dedupe = 0.0
[[rule]]
id = "storm"
correlate = "threshold"
count = 3
window = 10.0
on = ["VirtiofsdExited"]
actions = ["notify"]
"""


def test_threshold_counts_exactly_n_within_exactly_w(tmp_path: Path) -> None:
    """Three events with the first exactly W seconds before the third: fires."""
    engine = engine_with(tmp_path, THRESHOLD)
    fired = decisions(run(engine, [exited(0, 1), exited(5, 2), exited(10, 3)]))
    assert [(d.action, d.cause and d.cause.line) for d in fired] == [("notify", 3)]


def test_threshold_just_outside_the_window_does_not_fire(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, THRESHOLD)
    assert decisions(run(engine, [exited(0), exited(5), exited(10.001)])) == []
    # two in the window are not three
    assert decisions(run(engine, [exited(0), exited(1)])) == []


def test_threshold_restarts_counting_after_firing(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, THRESHOLD)
    fired = decisions(run(engine, [exited(t, n) for n, t in enumerate([0, 1, 2, 3, 4, 5], 1)]))
    assert [d.cause.line for d in fired if d.cause] == [3, 6]


def test_threshold_is_per_share(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, THRESHOLD)
    items = [exited(0, 1, "a"), exited(1, 2, "b"), exited(2, 3, "a"), exited(3, 4, "b")]
    assert decisions(run(engine, items)) == []


COOLDOWN = """
[[rule]]
id = "once"
correlate = "cooldown"
window = 30.0
on = ["VirtiofsdExited"]
actions = ["notify"]
[policy]
dedupe = 0.0
"""


def test_cooldown_edges(tmp_path: Path) -> None:
    """A repeat exactly W later fires again; anything sooner is suppressed."""
    engine = engine_with(tmp_path, COOLDOWN)
    fired = decisions(run(engine, [exited(0, 1), exited(29.999, 2), exited(30, 3), exited(59, 4)]))
    assert [d.cause.line for d in fired if d.cause] == [1, 3]


PAIR = """
[[rule]]
id = "reset-reconnect"
correlate = "pair"
on = ["VmReset"]
then = ["VirtiofsdClientConnected"]
window = 60.0
actions = ["readd_fs"]
then_actions = ["notify"]
"""


def reset(seconds: float) -> Event:
    return VmReset(time=at(seconds), source="ch", offset=0, line=1, trigger="VM reset event")


def test_pair_in_time_at_exactly_the_deadline(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, PAIR)
    fired = decisions(run(engine, [reset(0), connected(60, 2)]))
    assert [d.action for d in fired] == ["notify"]


def test_pair_escalates_at_its_deadline_when_late(tmp_path: Path) -> None:
    """B a moment late: the escalation is decided at the deadline, in event time."""
    engine = engine_with(tmp_path, PAIR)
    fired = decisions(run(engine, [reset(0), connected(60.5, 2)]))
    assert [(d.action, d.time) for d in fired] == [("readd_fs", at(60).timestamp())]


def test_pair_escalates_on_a_tick_without_events(tmp_path: Path) -> None:
    engine = engine_with(tmp_path, PAIR)
    assert decisions(run(engine, [reset(0), Tick(at(59).timestamp())])) == []
    fired = decisions(run(engine, [reset(0), Tick(at(61).timestamp())]))
    assert [d.action for d in fired] == ["readd_fs"]


def shipped() -> Engine:
    return Engine(load_rules(ROOT / "rules"))


def test_backoff_doubles_to_the_cap_with_bounded_jitter() -> None:
    policy = Policy(backoff_initial_s=1.0, backoff_max_s=8.0, backoff_jitter=0.2)
    delays = [backoff_delay(policy, "s", n) for n in range(7)]
    assert delays[0] == 0.0
    for n, base in enumerate([1, 2, 4, 8, 8, 8], 1):
        assert base <= delays[n] <= base * 1.2
    assert delays == [backoff_delay(policy, "s", n) for n in range(7)]  # seeded: repeatable
    other = Policy(backoff_initial_s=1.0, backoff_max_s=8.0, backoff_jitter=0.2, seed=7)
    assert delays != [backoff_delay(other, "s", n) for n in range(7)]


def test_backoff_stays_at_the_cap_however_many_attempts() -> None:
    """A share dying every minute never trips the storm rule: attempts grow for ever."""
    policy = Policy()
    capped = [backoff_delay(policy, "fs0", n) for n in (7, 64, 65, 1025, 10**6)]
    assert all(policy.backoff_max_s <= d <= policy.backoff_max_s * 1.2 for d in capped)


def test_first_respawn_is_immediate_then_backs_off_and_resets_after_health() -> None:
    """Exit, exit, exit (no health between): delays 0, ~1, ~2; healthy 60 s: back to 0."""
    engine = shipped()
    items: list[Event | Tick] = [exited(0, 1), exited(10, 2), exited(20, 3)]
    items += [connected(21, 4), exited(200, 5)]
    respawns = [d for d in decisions(run(engine, items)) if d.action == "respawn_virtiofsd"]
    delays = [round(d.not_before - d.time, 3) for d in respawns]
    assert delays[0] == 0.0
    assert 1.0 <= delays[1] <= 1.2
    assert 2.0 <= delays[2] <= 2.4
    assert delays[3] == 0.0  # 179 s healthy > healthy_after (60 s)


def test_restart_storm_opens_the_circuit_and_retries_slowly() -> None:
    engine = shipped()
    storm: list[Event | Tick] = [exited(t, n) for n, t in enumerate([0, 10, 20, 30, 40], 1)]
    outputs = run(engine, [*storm, exited(45, 6), Tick(at(339).timestamp())])
    opened = [o for o in outputs if isinstance(o, Transition) and o.after == Phase.CIRCUIT_OPEN]
    assert [o.time for o in opened] == [at(40).timestamp()]
    suppressed = [d for d in decisions(outputs) if d.suppressed]
    assert {d.action for d in suppressed} == {"respawn_virtiofsd", "remount_guest"}
    assert all(d.suppressed == "circuit open" for d in suppressed)
    # circuit_retry is 300 s: the slow retry is due at 340 s, not before
    assert not [d for d in decisions(outputs) if d.rule == "circuit-retry"]
    retried = decisions(run(engine, [*storm, Tick(at(340).timestamp())]))
    assert [(d.rule, d.action, d.time) for d in retried if d.rule == "circuit-retry"] == [
        ("circuit-retry", "respawn_virtiofsd", at(340).timestamp())
    ]


def test_recovery_closes_the_circuit() -> None:
    engine = shipped()
    storm: list[Event | Tick] = [exited(t, n) for n, t in enumerate([0, 1, 2, 3, 4], 1)]
    outputs = run(engine, [*storm, connected(400, 9)])
    last = [o for o in outputs if isinstance(o, Transition)][-1]
    assert (last.before, last.after) == (Phase.CIRCUIT_OPEN, Phase.HEALTHY)


def test_restart_vm_stays_suppressed_unless_allowed(tmp_path: Path) -> None:
    rules = "[[rule]]\nid = 'vm'\non = ['VirtiofsdExited']\nactions = ['restart_vm']\n"
    (decision,) = decisions(run(engine_with(tmp_path, rules), [exited(0)]))
    assert decision.suppressed == "restart_vm is not allowed by the policy"
    allowed = engine_with(tmp_path, rules + "[policy]\nallow_restart_vm = true\n")
    (decision,) = decisions(run(allowed, [exited(0)]))
    assert decision.suppressed is None


def test_a_cascade_is_one_decision_per_action() -> None:
    """Client disconnected, then the supervisor's exit line: one respawn, not two."""
    engine = shipped()
    disconnected = replace(exited(0.0, 1), line=1)
    items: list[Event | Tick] = [disconnected, exited(0.2, 2)]
    assert [d.action for d in decisions(run(engine, items))] == [
        "respawn_virtiofsd",
        "remount_guest",
    ]


def test_socket_paths_map_to_the_tag_learned_from_fs_config() -> None:
    """FsDeviceCreating names tag and socket; later lines name only the socket."""
    engine = shipped()
    create = FsDeviceCreating(
        time=at(0), source="ch", offset=0, line=1, share="myfs", tag="myfs", socket="/run/fs.sock"
    )
    timeout = BackendConnectTimeout(
        time=at(70), source="ch", offset=9, line=2, share="/run/fs.sock", socket="/run/fs.sock"
    )
    fired = decisions(run(engine, [create, timeout]))
    assert {d.share for d in fired} == {"myfs"}


def test_the_users_incident_decides_respawn_readd_remount() -> None:
    """Golden: both published forms of the incident get the decisions an operator wants."""
    for excerpt_id in ("CH01", "CH02"):
        (excerpt,) = [e for e in EXCERPTS if e.id == excerpt_id]
        outputs = run(shipped(), list(parse_excerpt(excerpt)))
        healing = [
            (d.action, d.key, d.after, d.cause.kind if d.cause else None)
            for d in decisions(outputs)
            if d.action != "notify"
        ]
        assert healing == [
            ("ensure_virtiofsd", "default#1/ensure_virtiofsd/1", None, "BackendConnectTimeout"),
            (
                "readd_fs",
                "default#1/readd_fs/1",
                "default#1/ensure_virtiofsd/1",
                "BackendConnectTimeout",
            ),
            (
                "remount_guest",
                "default#1/remount_guest/1",
                "default#1/readd_fs/1",
                "BackendConnectTimeout",
            ),
        ]
        notified = [d.rule for d in decisions(outputs) if d.action == "notify"]
        assert notified == ["vmm-exited-on-reboot", "api-unreachable"]


# --- properties -----------------------------------------------------------------

KIND_MAKERS: list[Callable[[float, int], Event]] = [
    lambda t, n: exited(t, n, None),
    connected,
    lambda t, n: reset(t),
    lambda t, n: BackendConnectTimeout(
        time=at(t), source="ch", offset=n, line=n, error_kind="ConnectionRefused", errno=111
    ),
]
inputs = st.lists(
    st.tuples(st.floats(min_value=0, max_value=2000), st.integers(0, len(KIND_MAKERS) - 1)),
    max_size=60,
).map(lambda xs: [KIND_MAKERS[k](t, n) for n, (t, k) in enumerate(sorted(xs), 1)])


@settings(max_examples=150)
@given(inputs)
def test_stepping_is_deterministic_and_snapshots_are_exact(items: list[Event]) -> None:
    """Same inputs, same outputs; a snapshot round trip resumes to the same state."""
    engine = shipped()
    assert run(engine, list(items)) == run(engine, list(items))
    state = engine.initial()
    for n, item in enumerate(items):
        state, _ = engine.step(state, item)
        if n % 7 == 0:
            state = state_from_dict(state_to_dict(state))
    straight = engine.initial()
    for item in items:
        straight, _ = engine.step(straight, item)
    assert state == straight


@pytest.mark.parametrize("seconds", [0.0, 59.999])
def test_events_with_no_time_use_the_last_known_time(seconds: float) -> None:
    engine = shipped()
    timeless = replace(exited(0, 2), time=None)
    outputs = run(engine, [reset(seconds), timeless])
    assert all(d.time == at(seconds).timestamp() for d in decisions(outputs))


def listening(seconds: float, line: int = 1) -> Event:
    return VirtiofsdListening(time=at(seconds), source="log", offset=line, line=line)


def test_a_reconnect_in_time_opens_no_incident() -> None:
    """The shipped reset rule: a client within 60 s means all is well."""
    outputs = run(shipped(), [reset(0), connected(3, 2)])
    assert outputs == []


def test_a_due_escalation_fires_on_any_later_event() -> None:
    """No rule uses VirtiofsdListening, yet the time it carries makes the pair due."""
    fired = decisions(run(shipped(), [reset(0), listening(120, 2)]))
    assert [(d.rule, d.action, d.time) for d in fired] == [
        ("reconnect-after-reset", "ensure_virtiofsd", at(60).timestamp()),
        ("reconnect-after-reset", "readd_fs", at(60).timestamp()),
        ("reconnect-after-reset", "notify", at(60).timestamp()),
    ]


def test_the_exit_that_trips_the_storm_is_not_respawned() -> None:
    storm = [exited(t, n) for n, t in enumerate(range(0, 50, 10), 1)]
    fired = decisions(run(shipped(), list(storm)))
    fifth = [d for d in fired if d.cause and d.cause.line == 5]
    assert [(d.action, d.suppressed) for d in fifth] == [
        ("open_circuit", None),
        ("notify", None),
        ("respawn_virtiofsd", "circuit open"),
        ("remount_guest", "circuit open"),
    ]


def test_an_open_circuit_is_not_opened_or_alerted_again() -> None:
    storm = [exited(t, n) for n, t in enumerate(range(0, 3000, 10), 1)]
    fired = decisions(run(shipped(), list(storm)))
    assert [d.action for d in fired].count(Action.OPEN_CIRCUIT) == 1
    assert [d.action for d in fired if d.rule == "restart-storm"] == ["open_circuit", "notify"]


def test_info_decisions_outside_incidents_get_keys_of_their_own(tmp_path: Path) -> None:
    rules = (ROOT / "rules" / "healing.toml").read_text() + (
        '\n[[rule]]\nid = "seen"\nseverity = "info"\non = ["VirtiofsdListening"]\n'
        'actions = ["notify"]\n'
    )
    engine = engine_with(tmp_path, rules)
    outputs = run(engine, [exited(2, 1), connected(5, 2), listening(600, 3), listening(700, 4)])
    seen = [d.key for d in decisions(outputs) if d.rule == "seen"]
    assert seen == ["default#0/notify/1", "default#0/notify/2"]


def test_the_engine_clock_never_runs_backwards() -> None:
    """A lagging source's older event counts at the latest time seen."""
    disconnected = replace(exited(50, 3), share="fs1")  # another share, still healthy
    fired = decisions(run(shipped(), [exited(100, 1), connected(101, 2), disconnected]))
    assert [d.time for d in fired if d.cause and d.cause.line == 3] == [at(101).timestamp()] * 2


def test_a_failure_written_before_the_last_recovery_decides_nothing() -> None:
    """Read late (another log path), it is about a daemon that was already replaced."""
    outputs = run(shipped(), [exited(100, 1), connected(101, 2), exited(100.5, 3)])
    assert [o for o in outputs if o.cause and o.cause.line == 3] == []
    later = run(shipped(), [exited(100, 1), connected(101, 2), exited(106, 3)])
    assert [d.action for d in decisions(later) if d.cause and d.cause.line == 3] == [
        "respawn_virtiofsd",
        "remount_guest",
    ]


def test_a_second_death_of_another_process_is_respawned_at_once() -> None:
    """Deduplication merges reports of one process; a new pid is a new death."""
    first = replace(exited(0, 1), origin=Origin(program="virtiofsd", pid=100))
    same = replace(exited(0.1, 2), origin=Origin(program="virtiofsd", pid=100))
    second = replace(exited(2, 3), origin=Origin(program="virtiofsd", pid=101))
    respawns = [
        d
        for d in decisions(run(shipped(), [first, same, second]))
        if d.action == "respawn_virtiofsd"
    ]
    assert [d.cause.line for d in respawns if d.cause] == [1, 3]
