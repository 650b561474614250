"""End to end with a real guest: QEMU (TCG), the real virtiofsd, a Linux guest.

``healer watch`` holds the share's socket and runs virtiofsd; QEMU's vhost-user-fs
device connects to it and the guest mounts the tag. virtiofsd is SIGKILLed and
healer must heal the share with no human: respawn, QMP re-add, remount over the
guest's serial console. Then I/O goes both ways. A guest with I/O in flight on the
dead device cannot be healed under QEMU 7.2: healer must say so and escalate.

One guest per module for the idle scenarios (boot is about 6.5 s under TCG); the
stuck scenarios leave their guest unusable and get their own. Select with ``-m guest``.
Every wait is bounded; no time is asserted.
"""

from __future__ import annotations

import itertools
import os
import signal
import time
from collections.abc import Iterator

import pytest
from guest.rig import Rig, missing

from healer.supervise.process import children

pytestmark = pytest.mark.guest

HEAL_LIMIT_S = 60.0  # a bound for a failed heal to show, not a target


def _require() -> None:
    lacking = missing()
    if lacking is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the guest tests need {lacking} in CI (scripts/test installs it)")
        pytest.skip(f"needs {lacking}")


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    _require()
    with Rig() as running:
        yield running


def kill_and_heal(rig: Rig) -> int:
    pid = rig.kill()
    rig.wait(lambda: rig.healed(pid), HEAL_LIMIT_S, f"the heal after killing {pid}")
    return pid


def test_a_killed_virtiofsd_is_healed_in_the_guest_without_a_human(rig: Rig) -> None:
    assert rig.round_trip("before") == ("from guest before", "from host before")
    pid = kill_and_heal(rig)
    assert rig.round_trip("after") == ("from guest after", "from host after")
    journal = rig.records()
    kinds = [r["event"]["kind"] for r in journal if r["type"] == "event"]
    assert "VirtiofsdExited" in kinds
    assert kinds.count("DeviceAdded") >= 1  # the QMP re-add, journaled
    exits = [
        r["event"]
        for r in journal
        if r["type"] == "event" and r["event"]["kind"] == "VirtiofsdExited"
    ]
    assert exits[0]["fields"]["signal"] == "SIGKILL"
    assert exits[0]["origin"]["pid"] == pid
    respawns = rig.outcomes("respawn_virtiofsd")
    assert respawns
    assert "succeeded" in {s for _, s in respawns}
    assert "timed_out" not in {s for _, s in respawns}
    assert rig.vm.alive()


def test_five_kills_in_a_row_are_each_healed(rig: Rig) -> None:
    for n in range(5):
        kill_and_heal(rig)
        name = f"kill{n}"
        assert rig.round_trip(name) == (f"from guest {name}", f"from host {name}")
    statuses = {s for _, s in rig.outcomes("respawn_virtiofsd")}
    assert statuses == {"succeeded"}


# The guest's I/O loop, a script in the share run in a session of its own (so nothing on
# the console can end it): each round writes a counter through a rename and reads it
# back, then appends the guest's uptime (centiseconds) to a log in the share; a round
# that fails appends "failed N". The host reads both files directly in the shared
# directory: no console and no clock comparison is needed to see the loop go on.
_IO_LOOP = """d=/mnt/fs0/io
i=0
while [ ! -e $d/stop ]; do
  i=$((i+1))
  if echo $i > $d/count.tmp && mv $d/count.tmp $d/count && [ "$(cat $d/count)" = "$i" ]
  then :
  else echo "failed $i" >> $d/up
  fi
  read up rest < /proc/uptime
  echo "$up" >> $d/up
done
echo done >> $d/up
"""


def _io_log(rig: Rig) -> list[str]:
    try:
        return (rig.shared / "io" / "up").read_text().split("\n")
    except OSError:
        return []


def _io_report(lines: list[str]) -> tuple[int, float, list[str]]:
    """(rounds, the longest gap between two rounds in seconds, failed rounds)."""
    times = [float(line) for line in lines if line.replace(".", "", 1).isdigit()]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return len(times), max(gaps, default=0.0), [line for line in lines if "failed" in line]


def _guest_rounds(rig: Rig) -> int:
    try:
        return int((rig.shared / "io" / "count").read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _wait_for_rounds(rig: Rig, what: str, rounds: int = 3) -> None:
    """Until the guest loop has done ``rounds`` more rounds (bounded)."""
    before = _guest_rounds(rig)
    rig.wait(lambda: _guest_rounds(rig) >= before + rounds, HEAL_LIMIT_S, what)


def _wait_for_adoption(rig: Rig, seen: int, what: str) -> None:
    """Until a restarted healer says it watches (it has taken over the holder's daemon:
    the journal has it already, at the same position, so nothing new is journaled)."""
    rig.wait(lambda: _watching(rig) > seen, HEAL_LIMIT_S, what)


def _watching(rig: Rig) -> int:
    return sum(1 for _, line in rig.lines if "INFO started healer " in line)


def test_guest_io_goes_on_while_healer_is_killed_restarted_and_reloaded() -> None:
    """Issue 11: healer's own death is invisible to the guest. A guest loop writes and
    reads the share while ``healer watch`` is SIGKILLed and restarted five times and then
    reloaded: the same virtiofsd serves throughout (no exit, no re-add, no remount), the
    loop makes progress while healer is absent, and no round fails. The longest gap
    between rounds is printed (bench/restart_peers.py measures it against peers)."""
    _require()
    with Rig() as rig:
        daemon = rig.daemon_pid()
        assert daemon is not None
        (rig.shared / "io").mkdir()
        (rig.shared / "io" / "loop.sh").write_text(_IO_LOOP)
        started = rig.vm.sh("{ setsid sh /mnt/fs0/io/loop.sh </dev/null >/dev/null 2>&1 & }")
        assert started.status == 0, started
        rig.wait(lambda: _guest_rounds(rig) > 3, HEAL_LIMIT_S, "the guest loop to run")
        for n in range(5):
            adopted = _watching(rig)
            rig.kill_healer()
            # I/O goes on with no healer at all: the holder's daemon serves the guest.
            _wait_for_rounds(rig, f"I/O with healer killed ({n})")
            rig.start_healer()
            _wait_for_adoption(rig, adopted, f"adoption {n}")
        assert rig.healer is not None
        reloads = len([line for _, line in rig.lines if "reloaded " in line])
        rig.healer.send_signal(signal.SIGHUP)
        rig.wait(
            lambda: len([line for _, line in rig.lines if "reloaded " in line]) > reloads,
            HEAL_LIMIT_S,
            "the reload",
        )
        _wait_for_rounds(rig, "I/O after the reload")
        (rig.shared / "io" / "stop").write_text("")
        rig.wait(lambda: "done" in _io_log(rig), HEAL_LIMIT_S, "the guest loop to stop")
        rounds, longest, failed = _io_report(_io_log(rig))
        print(f"guest I/O through 5 healer kills and a reload: {rounds} rounds, ", end="")
        print(f"longest gap between two {longest:.2f} s")
        assert failed == []
        assert rig.daemon_pid() == daemon  # the same virtiofsd served all along
        kinds = [r["event"]["kind"] for r in rig.records() if r["type"] == "event"]
        assert "VirtiofsdExited" not in kinds
        assert "VirtiofsdClientDisconnected" not in kinds
        assert rig.outcomes("respawn_virtiofsd") == []
        assert rig.outcomes("remount_guest") == []
        assert rig.vm.alive()


def _waits_for_an_answer(rig: Rig) -> bool:
    """A guest process sleeps in the FUSE request it sent (the kernel's wait for the
    answer): the request is on the device's queue."""
    return "request_wait_answer" in "".join(rig.vm.sh("cat /proc/[0-9]*/wchan 2>/dev/null").output)


def _stuck(rig: Rig) -> list[dict[str, object]]:
    """A request is in flight when virtiofsd dies: virtiofsd is stopped (SIGSTOP, its
    children too), the guest looks up a name it has never seen, and the kill waits until
    the guest shows the lookup waiting for its answer. (A loop of reads left it to
    chance under TCG, and a FIFO in the share sends no request: the guest opens it
    itself.)"""
    daemon = rig.daemon_pid()
    assert daemon is not None
    for pid in (daemon, *children(daemon)):
        os.kill(pid, signal.SIGSTOP)  # it answers nothing from now on
    name = f"never-looked-up-{time.time_ns()}"
    started = rig.vm.sh(f"{{ stat /mnt/fs0/{name} >/dev/null 2>&1 & }}")
    assert started.status == 0
    rig.wait(lambda: _waits_for_an_answer(rig), HEAL_LIMIT_S, "the guest's lookup in flight")
    rig.kill()

    def stuck_events() -> list[dict[str, object]]:
        return [
            r["event"]
            for r in rig.records()
            if r["type"] == "event" and r["event"]["kind"] == "DeviceRemoveFailed"
        ]

    rig.wait(stuck_events, HEAL_LIMIT_S, "the stuck device to be reported")
    rig.wait(
        lambda: any(s == "closed" for _, s in rig.outcomes("remount_guest")),
        HEAL_LIMIT_S,
        "the remount to be skipped",
    )
    return stuck_events()


def test_a_stuck_device_is_reported_and_the_guest_left_alone(rig: Rig) -> None:
    """Runs last on the shared guest: it leaves the device stuck (nothing can heal it)."""
    (event, *_) = _stuck(rig)
    assert "escalation: notify" in str(event["message"])
    journal = rig.records()
    alerts = [r for r in journal if r["type"] == "decision" and r["rule"] == "device-stuck"]
    assert [a["action"] for a in alerts][:1] == ["notify"]
    assert ("timed_out" in {s for _, s in rig.outcomes("respawn_virtiofsd")}) or (
        "timed_out" in {s for _, s in rig.outcomes("readd_fs")}
    )
    # The remount after the failed re-add was skipped, not run into the dead device.
    assert any(s == "closed" for _, s in rig.outcomes("remount_guest"))
    assert rig.vm.alive()
    assert rig.vm.sh("echo alive").output == ("alive",)  # the rig's shell is unharmed


def test_a_stuck_device_with_system_reset_opted_in_resets_the_vm() -> None:
    _require()
    with Rig(on_stuck="system_reset") as rig:
        (event, *_) = _stuck(rig)
        assert "escalation: system_reset" in str(event["message"])
        # -no-reboot: QEMU turns the reset into a shutdown, which the rig sees.
        rig.wait(lambda: not rig.vm.alive(), HEAL_LIMIT_S, "QEMU to act on the reset")
