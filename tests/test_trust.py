"""Who wrote a line decides what it may ask for (docs/trust.md).

A line the guest wrote (its console in a source marked ``trust = "guest"``, a Kata
``vmconsole`` record, the guest kernel's own kinds) asks the host for nothing by
itself, opens no incident and cannot make the host's own report look like a repeat;
one tailed log decides at most ``source_decisions`` actions per window.
Expectations are written from the rules in rules/healing.toml, not from a run.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from healer.config import ConfigError, load_config
from healer.engine import Action, Decision, Engine, Transition
from healer.engine.rules import RuleSet
from healer.engine.trust import RATE_LIMITED
from healer.events import (
    KINDS,
    BackendDisconnected,
    DeviceAdded,
    DeviceNeedsReset,
    Event,
    GuestTagNotFound,
    Origin,
    VirtiofsdClientConnected,
    VirtiofsdClientDisconnected,
    VirtiofsdExited,
    VirtiofsdStarted,
    VmmExited,
)
from healer.parse.stream import SourceParser
from healer.rulefiles import load_rules

ROOT = Path(__file__).parent.parent
T0 = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
GUEST = Origin(guest=True)


def shipped(**policy: Any) -> RuleSet:
    rules = load_rules(ROOT / "rules")
    return replace(rules, policy=replace(rules.policy, **policy))


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def outputs(rules: RuleSet, events: list[Event]) -> list[Decision | Transition]:
    engine = Engine(rules)
    state = engine.initial()
    out: list[Decision | Transition] = []
    for event in events:
        state, step = engine.step(state, event)
        out += step
    return out


HOST = Origin()


def needs_reset(seconds: float, origin: Origin = HOST, source: str = "ch") -> Event:
    return DeviceNeedsReset(
        time=at(seconds), source=source, offset=0, line=1, share="fs0", origin=origin
    )


def test_a_reset_the_guest_wrote_is_checked_by_the_host_and_opens_no_incident() -> None:
    out = outputs(shipped(), [needs_reset(0, GUEST, "console")])
    assert not [o for o in out if isinstance(o, Transition)]
    decided = [(d.action, d.incident, d.suppressed) for d in out if isinstance(d, Decision)]
    assert decided == [
        (Action.ENSURE, "fs0#0", None),
        (Action.READD, "fs0#0", None),
        (Action.REMOUNT, "fs0#0", None),
    ]
    readd = next(d for d in out if isinstance(d, Decision) and d.action == Action.READD)
    assert readd.cause is not None
    assert readd.cause.guest
    assert readd.note is not None
    assert "unserved" in readd.note


def test_the_same_reset_from_the_host_opens_an_incident_at_once_after_the_guest_one() -> None:
    """The guest's copy first, the VMM's own line a second later: the host's is not a
    repeat of the guest's, it opens the incident and decides the healing."""
    out = outputs(shipped(), [needs_reset(0, GUEST, "console"), needs_reset(1)])
    transitions = [(t.incident, t.before, t.after) for t in out if isinstance(t, Transition)]
    assert transitions[0] == ("fs0#1", "healthy", "failing")
    host = [d for d in out if isinstance(d, Decision) and d.incident == "fs0#1"]
    assert [d.action for d in host] == [Action.ENSURE, Action.READD, Action.REMOUNT]
    assert all(d.suppressed is None and d.cause is not None for d in host)
    assert not any(d.cause is not None and d.cause.guest for d in host)


def test_the_guest_s_word_about_a_death_decides_nothing() -> None:
    """Every kind the shipped respawn rule heals is a death report; from the guest,
    none decides anything: healer's own observation of its daemon's end does."""
    rules = load_rules(ROOT / "rules")
    (respawning,) = [r for r in rules.rules if r.id == "respawn-on-exit"]
    for kind in respawning.on:
        event = KINDS[kind](
            time=at(0), source="console", offset=0, line=1, share="fs0", origin=GUEST
        )
        assert outputs(rules, [event]) == [], kind


def test_a_respawn_the_guest_asks_for_becomes_an_ensure(tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text(
        '[[rule]]\nid = "r"\non = ["DeviceNeedsReset"]\nactions = ["respawn_virtiofsd"]\n'
    )
    (ensure,) = [
        d for d in outputs(load_rules(tmp_path), [needs_reset(0, GUEST)]) if isinstance(d, Decision)
    ]
    assert (ensure.action, ensure.suppressed, ensure.incident) == (Action.ENSURE, None, "fs0#0")
    (respawn,) = [
        d for d in outputs(load_rules(tmp_path), [needs_reset(0)]) if isinstance(d, Decision)
    ]
    assert (respawn.action, respawn.incident) == (Action.RESPAWN, "fs0#1")


def test_the_guest_kernel_s_kinds_are_the_guest_s_wherever_they_were_read() -> None:
    event = GuestTagNotFound(time=at(0), source="ch", offset=0, line=1, share="fs0", tag="fs0")
    out = outputs(shipped(), [event])
    assert not [o for o in out if isinstance(o, Transition)]
    decided = [d for d in out if isinstance(d, Decision)]
    assert [d.action for d in decided] == [Action.READD, Action.REMOUNT]
    assert all(d.cause is not None and d.cause.guest for d in decided)


def test_a_vm_restart_the_guest_asks_for_is_refused_even_when_allowed(tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text(
        "[policy]\nallow_restart_vm = true\n"
        '[[rule]]\nid = "restart"\non = ["VmmExited"]\nactions = ["restart_vm"]\n'
    )
    rules = load_rules(tmp_path)
    exit_ = VmmExited(time=at(0), source="console", offset=0, line=1, share="fs0", origin=GUEST)
    (refused,) = [d for d in outputs(rules, [exit_]) if isinstance(d, Decision)]
    assert refused.action == Action.RESTART_VM
    assert refused.suppressed is not None
    assert "guest" in refused.suppressed
    # The host's own VmmExited is restarted, as the policy allows.
    host = replace(exit_, source="ch", origin=Origin())
    (restart,) = [d for d in outputs(rules, [host]) if isinstance(d, Decision)]
    assert (restart.action, restart.suppressed) == (Action.RESTART_VM, None)


def test_a_circuit_the_guest_asks_to_open_stays_closed(tmp_path: Path) -> None:
    (tmp_path / "r.toml").write_text(
        '[[rule]]\nid = "storm"\non = ["DeviceNeedsReset"]\nactions = ["open_circuit"]\n'
    )
    rules = load_rules(tmp_path)
    out = outputs(rules, [needs_reset(0, GUEST, "console")])
    assert not [o for o in out if isinstance(o, Transition)]
    (refused,) = [d for d in out if isinstance(d, Decision)]
    assert refused.suppressed is not None
    assert "open_circuit" in refused.suppressed
    host = outputs(rules, [needs_reset(0)])
    assert [t.after for t in host if isinstance(t, Transition)] == ["failing", "circuit-open"]


def test_one_tailed_log_decides_at_most_its_share_per_window() -> None:
    """A reset heals with three actions; at 5 decisions per 60 s the second reset gets
    two, the third none (each suppressed one says why); after the window, three again."""
    rules = shipped(source_decisions=5, source_window_s=60.0, dedupe_s=0.0)
    out = outputs(rules, [needs_reset(0), needs_reset(10), needs_reset(20), needs_reset(61)])
    decided = [d for d in out if isinstance(d, Decision)]
    ran = [round(d.time - T0.timestamp()) for d in decided if d.suppressed is None]
    assert ran == [0, 0, 0, 10, 10, 61, 61, 61]
    limited = [d.suppressed for d in decided if d.suppressed is not None]
    assert len(limited) == 4  # one of the second reset, three of the third
    assert all(reason.startswith(RATE_LIMITED + " ch:") for reason in limited)


def test_healer_s_own_observations_are_never_rate_limited() -> None:
    rules = shipped(source_decisions=1, source_window_s=600.0, dedupe_s=0.0)
    own = [
        replace(needs_reset(s), source="virtiofsd:fs0", origin=Origin(generation=1))
        for s in (0, 10, 20)
    ]
    decided = [d for d in outputs(rules, own) if isinstance(d, Decision)]
    assert decided
    assert all(d.suppressed is None for d in decided)


def test_a_kata_vmconsole_record_is_the_guest_s_and_a_guest_source_all_of_it() -> None:
    reset = (
        "cloud-hypervisor: 10.000000s: <fs0> WARN:virtio-devices/src/lib.rs:88 -- Corrupted "
        "request detected (fs0: worker exited with error: HandleEvent(x)). Setting device "
        "status to 'NEEDS_RESET' and stopping processing queues until reset."
    )
    escaped = reset.replace('"', '\\"')
    kata = (
        f'time="2026-12-03T12:00:00.5Z" level=debug vmconsole="{escaped}" source=virtcontainers\n'
    )
    for line, guest_source, written_by_guest in (
        (kata, False, True),
        (reset + "\n", False, False),
        (reset + "\n", True, True),
    ):
        parser = SourceParser("log", default_year=2026, guest=guest_source)
        items = [*parser.feed(line.encode(), 0), *parser.close()]
        (event,) = [e for e in items if isinstance(e, Event)]
        assert isinstance(event, DeviceNeedsReset)
        assert event.origin.guest is written_by_guest


def test_a_source_s_trust_is_host_or_guest(tmp_path: Path) -> None:
    base = (
        f'[healer]\njournal = "{tmp_path / "j"}"\n[[share]]\nname = "fs0"\ntag = "fs0"\n'
        f'socket = "{tmp_path / "fs0.sock"}"\nshared_dir = "{tmp_path}"\n'
        f'[[source]]\npath = "{tmp_path / "console.log"}"\n'
    )
    config = tmp_path / "healer.toml"
    config.write_text(base + 'trust = "guest"\n')
    assert [s.trust for s in load_config(config).sources] == ["guest"]
    config.write_text(base)
    assert [s.trust for s in load_config(config).sources] == ["host"]
    config.write_text(base + 'trust = "vm"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    text = str(caught.value)
    assert "trust 'vm' is unknown" in text
    assert "healer.toml:10:" in text  # the line of the bad value


@pytest.mark.parametrize(("mode", "refused"), [(0o755, False), (0o1777, False), (0o777, True)])
def test_a_socket_directory_others_can_write_is_a_located_config_error(
    tmp_path: Path, mode: int, refused: bool
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(mode)
    config = tmp_path / "healer.toml"
    config.write_text(
        f'[healer]\njournal = "{tmp_path / "j"}"\n[[share]]\nname = "fs0"\n'
        f'socket = "{run / "fs0.sock"}"\nshared_dir = "{tmp_path}"\n'
    )
    if not refused:
        assert [s.socket for s in load_config(config).shares] == [str(run / "fs0.sock")]
        return
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    text = str(caught.value)
    assert "healer.toml:5:" in text  # the socket's line
    assert "writable by every user and not sticky" in text
    assert "only healer's user can write to" in text


def test_the_guest_s_copy_of_a_fault_the_host_heals_adds_nothing() -> None:
    """The VMM's log reports the reset (the host heals: incident fs0#1); the guest's
    console says it too, during the incident and just after the recovery: nothing more
    is decided. Later (past the 5 s dedupe window) the guest's word is checked again."""
    added = DeviceAdded(time=at(2), source="ch", offset=0, line=2, share="fs0")
    out = outputs(
        shipped(),
        [
            needs_reset(0),
            needs_reset(1, GUEST, "console"),
            added,
            needs_reset(3, GUEST, "console"),
            needs_reset(10, GUEST, "console"),
        ],
    )
    decided = [
        (round(d.time - T0.timestamp()), d.incident, d.action)
        for d in out
        if isinstance(d, Decision)
    ]
    assert decided == [
        (0, "fs0#1", Action.ENSURE),
        (0, "fs0#1", Action.READD),
        (0, "fs0#1", Action.REMOUNT),
        (10, "fs0#0", Action.ENSURE),
        (10, "fs0#0", Action.READD),
        (10, "fs0#0", Action.REMOUNT),
    ]


def test_the_guest_s_report_of_a_death_does_not_use_the_death_up() -> None:
    """The console says the backend went away (as the VMM would) before healer sees its
    daemon exit: the exit is still the death healer decides on, in an incident."""
    gone = BackendDisconnected(
        time=at(0), source="console", offset=0, line=1, share="fs0", origin=GUEST
    )
    daemon = Origin(program="virtiofsd", pid=41, generation=1)

    def of_daemon(kind: type[Event], seconds: float, source: str) -> Event:
        return kind(time=at(seconds), source=source, offset=0, line=1, share="fs0", origin=daemon)

    started = of_daemon(VirtiofsdStarted, -10, "healer:fs0")
    served = of_daemon(VirtiofsdClientConnected, -5, "virtiofsd:fs0")
    exit_ = of_daemon(VirtiofsdExited, 0.01, "healer:fs0")
    out = outputs(shipped(), [started, served, gone, exit_])
    host = [d for d in out if isinstance(d, Decision) and d.incident == "fs0#1"]
    assert [d.action for d in host] == [Action.RESPAWN, Action.REMOUNT]
    assert [t.after for t in out if isinstance(t, Transition)][:1] == ["failing"]


def test_forged_lost_clients_do_not_fill_the_host_s_storm_window() -> None:
    """Four lost clients on the console and one from virtiofsd itself: the host's window
    holds one, so the circuit (5 in 60 s) stays closed."""

    def lost(seconds: float, origin: Origin, source: str) -> Event:
        return VirtiofsdClientDisconnected(
            time=at(seconds), source=source, offset=0, line=1, share="fs0", origin=origin
        )

    forged = [lost(s, GUEST, "console") for s in (0, 1, 2, 3)]
    out = outputs(shipped(), [*forged, lost(4, HOST, "virtiofsd:fs0")])
    assert "circuit-open" not in [t.after for t in out if isinstance(t, Transition)]
    # Five from virtiofsd itself open it (the expectation the window is counted by).
    own = [lost(s, HOST, "virtiofsd:fs0") for s in (0, 1, 2, 3, 4)]
    host = outputs(shipped(), own)
    assert "circuit-open" in [t.after for t in host if isinstance(t, Transition)]
