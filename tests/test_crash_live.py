"""The crash matrix: healer SIGKILLed at random points of its work, restarted each time,
with the real virtiofsd serving a VMM all along.

Each round picks what healer is doing when it is killed (nothing; a respawn; a re-add
through the VMM's API; a guest remount; a restart storm; a reload), kills it at a
random moment inside that work, starts it again and waits until it has settled. The
VMM counts every connect refused in its reconnect loops, and a watcher reads the
kernel's socket table every few milliseconds: the socket must listen all along
(watching the table, not connecting: a connect would use up a daemon). At the end the journal must say:
every decision journaled once, every action that finished not run again, nothing left
open; no virtiofsd died that the test did not kill (or a re-add did not end), and never
two for the share. The matrix of what happened is printed.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from conftest import wait_for
from test_healing_live import quick_rules, write_config
from watching import everything_stopped, holder_pid, journal_records, start_watch

from healer.engine import FINAL, Phase, Status
from healer.journal import DecisionRecord, OutcomeRecord, Record, TransitionRecord
from healer.sim import ChStandIn
from healer.supervise import DaemonInfo, is_listening
from healer.supervise.process import children, command_line, exists
from healer.vmm import ChApiClient
from healer.vmm.chformat import log_line

ROUNDS = 40  # per daemon of the matrix: 120 kills of healer over the three
PHASES = ("idle", "respawn", "readd", "remount", "storm", "reload")


class ListenWatch:
    """Reads /proc/net/unix every 5 ms: does something listen on the socket?"""

    def __init__(self, path: Path) -> None:
        self.path, self.looks, self.gaps = path, 0, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.005):
            self.looks += 1
            if not is_listening(self.path):
                self.gaps += 1

    def __enter__(self) -> ListenWatch:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(5)


@dataclass
class Matrix:
    rounds: Counter[str] = field(default_factory=Counter)
    healer_kills: int = 0
    daemon_kills: int = 0
    readds: int = 0


@dataclass
class Field:
    root: Path
    config: Path
    vmm: ChStandIn
    brain: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.brain = start_watch(self.config, self.root / "healer.log")

    def kill(self) -> None:
        assert self.brain is not None
        self.brain.kill()
        self.brain.wait()

    def daemons(self) -> list[int]:
        """Every virtiofsd of fs0 that runs, as the holder's children (all of them: never
        two is what is checked; the holder's state names one)."""
        holder = holder_pid(self.config)
        if holder is None:
            return []
        return [
            p
            for p in children(holder)
            if exists(p) and any("shared-fs0" in a for a in command_line(p) or [])
        ]

    def records(self) -> list[Record]:
        return journal_records(self.root / "journal")

    def settled(self) -> bool:
        """Healthy, one daemon, every decision closed, and healer says it runs."""
        records = self.records()
        open_keys = {r.decision.key for r in records if isinstance(r, DecisionRecord)} - {
            r.key for r in records if isinstance(r, OutcomeRecord) and r.status in FINAL
        }
        suppressed = {
            r.decision.key
            for r in records
            if isinstance(r, DecisionRecord) and r.decision.suppressed is not None
        }
        phases = [r.transition.after for r in records if isinstance(r, TransitionRecord)]
        return (
            not (open_keys - suppressed)
            and (not phases or phases[-1] == Phase.HEALTHY)
            and len(self.daemons()) == 1
        )


def settle(here: Field) -> None:
    """Wait until healer has settled; if it does not, show why (the journal's tail)."""
    try:
        wait_for(here.settled, 60)
        time.sleep(1.1)  # healthy for healthy_after (1 s): the next fault is a first death
    except BaseException:
        records = here.records()
        ended = {r.key for r in records if isinstance(r, OutcomeRecord) and r.status in FINAL}
        for r in records:
            if isinstance(r, DecisionRecord) and r.decision.key not in ended:
                print("OPEN", r.decision)
        for r in records[-15:]:
            print(r)
        print((here.root / "healer.log").read_text(errors="replace")[-4000:])
        print("daemons", here.daemons())
        raise


@contextlib.contextmanager
def crash_field() -> Iterator[Field]:
    """healer watching fs0 (the virtiofsd of the test's daemon), the VMM connected; at the
    end everything is stopped (``healer stop``)."""
    with tempfile.TemporaryDirectory(prefix="crash", dir="/tmp") as name:
        root = Path(name)
        config = write_config(root, ("fs0",), rules=quick_rules(root / "rules"))
        slow = root / "guest.py"  # a remount that takes a moment, so a kill can land in it
        slow.write_text(slow.read_text() + "import time\ntime.sleep(0.15)\n")
        with everything_stopped(config):
            vmm = ChStandIn(root / "api.sock", root / "ch.log").start()
            here = Field(root, config, vmm)
            here.start()
            try:
                wait_for(lambda: len(here.daemons()) == 1)
                ChApiClient(str(root / "api.sock")).add_fs(
                    tag="fs0", socket=str(root / "fs0.sock"), device_id="fs0"
                )
                wait_for(lambda: vmm.stats.connects >= 1)
                yield here
            finally:
                vmm.stop()
                if here.brain is not None and here.brain.poll() is None:
                    here.kill()


def _fault(here: Field, phase: str, rng: random.Random, matrix: Matrix) -> None:
    """Start the work of ``phase``; healer is killed a random moment later."""
    if phase in ("respawn", "remount"):
        (pid,) = here.daemons()
        os.kill(pid, signal.SIGKILL)
        matrix.daemon_kills += 1
        delay = rng.uniform(0.0, 0.03) if phase == "respawn" else rng.uniform(0.02, 0.2)
    elif phase == "storm":
        for _ in range(3):
            pids = here.daemons()
            if pids:
                os.kill(pids[0], signal.SIGKILL)
                matrix.daemon_kills += 1
            time.sleep(0.15)
        delay = rng.uniform(0.0, 0.1)
    elif phase == "readd":
        line = log_line(
            53,
            rng.uniform(100, 200),
            level="ERROR",
            thread="vmm",
            where="timeout",
            msg=f"Failed connecting the backend after trying for 1 minute for socket "
            f"{here.root / 'fs0.sock'}: VhostUserProtocol(SocketConnect(Os {{ code: 111, "
            f'kind: ConnectionRefused, message: "Connection refused" }}))',
        )
        with (here.root / "ch.log").open("a") as log:
            log.write(line)
        matrix.readds += 1
        delay = rng.uniform(0.0, 0.4)
    elif phase == "reload":
        assert here.brain is not None
        os.kill(here.brain.pid, signal.SIGHUP)
        delay = rng.uniform(0.0, 0.05)
    else:
        delay = rng.uniform(0.0, 0.2)
    time.sleep(delay)


def test_healer_killed_at_random_points_loses_and_repeats_nothing(
    virtiofsd: DaemonInfo,
) -> None:
    rng = random.Random(20261203)  # noqa: S311 - test randomness, not crypto
    matrix = Matrix()
    with crash_field() as here, ListenWatch(here.root / "fs0.sock") as watch:
        for _ in range(ROUNDS):
            settle(here)
            before = here.daemons()
            phase = rng.choice(PHASES)
            matrix.rounds[phase] += 1
            _fault(here, phase, rng, matrix)
            here.kill()
            matrix.healer_kills += 1
            if phase in ("idle", "reload"):  # nothing killed virtiofsd: it must still serve
                assert here.daemons() == before, phase
            here.start()
        settle(here)
        records = here.records()
        daemons_at_end = here.daemons()
    decided = Counter(r.decision.key for r in records if isinstance(r, DecisionRecord))
    starts = Counter(
        r.key for r in records if isinstance(r, OutcomeRecord) and r.status == Status.STARTED
    )
    finals: dict[str, list[Status]] = {}
    for r in records:
        if isinstance(r, OutcomeRecord) and r.status in FINAL:
            finals.setdefault(r.key, []).append(r.status)
    print(
        f"\ncrash matrix ({virtiofsd.id}): {dict(matrix.rounds)}; healer killed "
        f"{matrix.healer_kills} times, virtiofsd {matrix.daemon_kills}, re-adds asked "
        f"{matrix.readds}; decisions {len(decided)}, actions started {sum(starts.values())} "
        f"(again after a crash cut them short: {sum(n - 1 for n in starts.values())}); "
        f"refused connects {here.vmm.stats.refused + here.vmm.stats.not_found}; socket not "
        f"listening {watch.gaps} of {watch.looks} looks; VMM sessions "
        f"{here.vmm.stats.connects}, disconnects {here.vmm.stats.disconnects}"
    )
    assert matrix.healer_kills == ROUNDS
    assert here.vmm.stats.refused == here.vmm.stats.not_found == 0
    assert watch.looks > 0
    assert watch.gaps == 0
    assert max(decided.values()) == 1  # journaled once each
    assert all(len(v) == 1 for v in finals.values())  # one end each
    # An action runs again only if healer died while it ran (no outcome was journaled
    # then): never once it had finished.
    ended: set[str] = set()
    for r in records:
        if isinstance(r, OutcomeRecord):
            if r.status == Status.STARTED:
                assert r.key not in ended, f"{r.key} ran again after it had ended"
            elif r.status in FINAL:
                ended.add(r.key)
    # Every VMM disconnect has a cause the test made: a daemon it killed or a re-add.
    assert here.vmm.stats.disconnects <= matrix.daemon_kills + matrix.readds
    assert len(daemons_at_end) == 1
