"""``healer demo``: the whole healing loop on a throwaway share, in about half a minute.

It needs only the real virtiofsd. In a private temporary directory it starts
``healer watch``'s own loop on one supervised share, the cloud-hypervisor stand-in
as the VMM (connected to the share over real vhost-user), and the guest stand-in as
the remount transport. Then it injects faults a user meets (virtiofsd killed under
a connected VMM, a guest reboot, a restart storm), prints the journal live as it
is written (events, phase changes, decisions, outcomes) and, at the end, a summary
and a postmortem report made from the journal by the same code as
``healer replay --report``.

The rules are the shipped ones with a shorter backoff and circuit retry, so the
storm heals within the demo instead of after five minutes.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from healer.config import load_config
from healer.engine import Status
from healer.errors import InputError
from healer.journal import (
    DecisionRecord,
    EventRecord,
    JournalCorrupt,
    OutcomeRecord,
    Record,
    TransitionRecord,
    read_records,
)
from healer.live import Watchdog
from healer.live.run import stop_holder
from healer.rulefiles import default_rules_dir, load_rules
from healer.supervise import find_virtiofsd

__all__ = ["run_demo"]

SHARE = "demo"
STORM_KILLS = 8  # the storm rules open the circuit at 5 deaths within 60 s
DEMO_POLICY = {  # shipped value -> demo value, each must be found
    "backoff_initial = 1.0": "backoff_initial = 0.3",
    "circuit_retry = 300.0": "circuit_retry = 4.0",
}


class DemoFailed(Exception):
    """A fault was not healed within its bound."""


@dataclass(slots=True)
class _Printer:
    """Prints journal records as they are written; keeps what the summary needs."""

    out: TextIO
    journal: Path
    seen: int = 0
    actions: dict[str, str] = field(default_factory=dict)
    outcomes: dict[str, str] = field(default_factory=dict)
    events: int = 0
    phase: str = "healthy"
    lock: threading.Lock = field(default_factory=threading.Lock)
    since: float = field(default_factory=time.time)  # the rows' times count from here
    fault: str = ""  # the fault being healed: "fault N at HH:MM:SS.mmmZ"
    faults: list[str] = field(default_factory=list)  # each healed fault, how long it took

    def poll(self) -> None:
        with self.lock:
            try:
                records = list(read_records(self.journal)) if self.journal.exists() else []
            except JournalCorrupt:
                return  # a record being written: read it next time
            for record in records[self.seen :]:
                self._show(record)
            self.seen = max(self.seen, len(records))

    def _show(self, record: Record) -> None:
        match record:
            case EventRecord(event=event):
                self.events += 1
                text = event.message.strip().splitlines()[0] if event.message else ""
                when = event.time.timestamp() if event.time else None
                self._say(when, f"event    {event.kind:<28} {text}")
            case TransitionRecord(transition=moved):
                self.phase = moved.after
                self._say(moved.time, f"phase    {moved.share}: {moved.before} -> {moved.after}")
            case DecisionRecord(decision=decision):
                self.actions[decision.key] = decision.action
                note = f" ({decision.suppressed})" if decision.suppressed else ""
                self._say(
                    decision.time, f"decide   {decision.action:<28} rule {decision.rule}{note}"
                )
            case OutcomeRecord(key=key, status=status, detail=detail) if key in self.actions:
                self.outcomes[key] = status
                if status != Status.STARTED:
                    why = f" ({detail})" if detail else ""
                    self._say(None, f"outcome  {self.actions[key]:<28} {status}{why}")

    def _say(self, when: float | None, line: str) -> None:
        """A row, whole (never cut), after its time since the fault began (when known)."""
        offset = f"{when - self.since:+8.3f}s" if when is not None else " " * 9
        print(f"  {offset} {line}", file=self.out, flush=True)


def run_demo(
    out: TextIO = sys.stdout,
    *,
    keep: Path | None = None,
    bound_s: float = 30.0,
    err: TextIO | None = None,
) -> int:
    """Run the demo; 0 when every fault was healed, 1 otherwise, 3 without virtiofsd.

    The files go to ``keep`` (made if needed) and stay; without it, to a temporary
    directory removed at the end. ``err`` (default stderr) gets a missing virtiofsd.
    """
    if keep is not None:
        _make_kept(keep)  # a --keep that cannot be used fails before anything starts
    found = find_virtiofsd()
    if found is None:
        print(
            "healer: demo needs the real virtiofsd, and none was found\n"
            "  hint: install it, or name one with HEALER_VIRTIOFSD=/path/to/virtiofsd:\n"
            "    Debian 12: apt-get install qemu-system-common  (/usr/lib/qemu/virtiofsd)\n"
            "    Debian 13: apt-get install virtiofsd           (/usr/libexec/virtiofsd)",
            file=err or sys.stderr,
        )
        return 3
    root = keep or Path(tempfile.mkdtemp(prefix="healer-demo-"))
    logging.getLogger("healer").setLevel(logging.ERROR)  # the journal printout says it all
    print(f"healer demo: virtiofsd {found[0]} ({found[1]}), files in {root}", file=out)
    from healer.sim import ChStandIn  # noqa: PLC0415 - the stand-in only for the demo

    ch = ChStandIn(root / "ch-api.sock", root / "cloud-hypervisor.log").start()
    config = load_config(_write_setup(root))
    watchdog = Watchdog(config, load_rules(root / "rules"))
    stop = threading.Event()
    serving = threading.Thread(target=watchdog.serve, args=(stop,), daemon=True)
    printer = _Printer(out, root / "journal")
    try:
        serving.start()
        _wait(lambda: _daemon_pid(watchdog) is not None, bound_s, "virtiofsd did not start")
        _step(out, "the VM boots: cloud-hypervisor adds the fs device and connects")
        from healer.vmm import ChApiClient  # noqa: PLC0415

        api = ChApiClient(str(root / "ch-api.sock"))
        api.add_fs(tag=SHARE, socket=str(root / f"{SHARE}.sock"), device_id=SHARE)
        _wait(lambda: ch.stats.connects >= 1, bound_s, "the VMM did not connect", printer)
        _settle(printer)
        _Faults(out, watchdog, ch, printer, root / "guest.log", bound_s).run()
        return 0
    except DemoFailed as exc:
        printer.poll()
        print(f"\nhealer demo: NOT healed: {exc}", file=out)
        return 1
    finally:
        stop.set()
        serving.join(15)
        stop_holder(config)  # the demo's virtiofsd and socket go too
        ch.stop()
        printer.poll()
        _summary(out, printer, root, kept=keep is not None)
        _metrics(out, watchdog)
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
            print(f"removed {root} (healer demo --keep DIR keeps the files)", file=out)


def _make_kept(keep: Path) -> None:
    """``--keep DIR`` made (private) if needed; InputError when it cannot be used."""
    try:
        keep.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError as exc:
        raise InputError(str(keep), "is not a directory", "name a directory for --keep") from exc
    except OSError as exc:
        problem = f"cannot be created: {exc.strerror}"
        raise InputError(str(keep), problem, "name a directory you can write") from exc
    if not os.access(keep, os.W_OK | os.X_OK):
        raise InputError(str(keep), "is not writable", "name a directory you can write")


@dataclass(slots=True)
class _Faults:
    """The injected faults, each waited on (bounded) until healed."""

    out: TextIO
    watchdog: Watchdog
    ch: Any
    printer: _Printer
    guest_log: Path
    bound_s: float

    def remounts(self) -> int:
        text = self.guest_log.read_text() if self.guest_log.exists() else ""
        return text.count(f"mount -t virtiofs {SHARE} ")

    def wait(self, condition: Callable[[], object], what: str) -> None:
        _wait(condition, self.bound_s, what, self.printer)

    def begin(self, number: int, text: str) -> float:
        """Say which fault comes, and when (UTC); the rows' times count from here."""
        self.printer.poll()  # what came before is not this fault's
        start = time.time()
        self.printer.since = start
        stamp = datetime.fromtimestamp(start, UTC).strftime("%H:%M:%S.%f")[:-3]
        self.printer.fault = f"fault {number} at {stamp}Z"
        _step(self.out, f"{self.printer.fault}: {text}")
        return start

    def took(self, start: float, healed_at: float) -> None:
        took = f"healed in {healed_at - start:.2f} s"
        self.printer.faults.append(f"{self.printer.fault} {took}")
        print(f"  {took}", file=self.out, flush=True)

    def healed(self, what: str, fault: Callable[[], object]) -> float:
        """Cause ``fault``, then wait until the VMM connected again, the guest
        remounted, virtiofsd runs and the journal says the share is healthy; the time
        it was so."""
        connects, mounts = self.ch.stats.connects, self.remounts()
        fault()

        def done() -> bool:
            return (
                self.ch.stats.connects > connects
                and self.remounts() > mounts
                and _daemon_pid(self.watchdog) is not None
                and self.printer.phase == "healthy"  # the next fault starts a new incident
            )

        self.wait(done, what)
        healed_at = time.time()
        _settle(self.printer)
        return healed_at

    def run(self) -> None:
        start = self.begin(1, "virtiofsd is killed (-9) while the VMM is connected")
        self.took(start, self.healed("no respawn and remount", lambda: _kill_daemon(self.watchdog)))
        start = self.begin(2, "the guest reboots (the VMM disconnects and reconnects)")
        self.took(start, self.healed("no reconnect after the reboot", self.ch.guest_reboot))
        start = self.begin(3, "a restart storm (virtiofsd killed again and again)")
        for _ in range(STORM_KILLS):
            if "open_circuit" in self.printer.actions.values():
                break
            self.respawned(_daemon_pid(self.watchdog))
        _step(
            self.out,
            "  ... the circuit opens; a respawn that gets through serves the share again",
        )
        self.wait(lambda: "open_circuit" in self.printer.actions.values(), "no circuit opened")
        self.wait(
            lambda: self.printer.phase == "healthy" and _daemon_pid(self.watchdog) is not None,
            "the share did not come back after the storm",
        )
        healed_at = time.time()
        _settle(self.printer)
        self.took(start, healed_at)
        _step(self.out, "every fault healed without a human")

    def respawned(self, pid: int | None) -> None:
        _kill_daemon(self.watchdog)

        def replaced() -> bool:
            return _daemon_pid(self.watchdog) not in (None, pid)

        self.wait(replaced, "no respawn")


def _write_setup(root: Path) -> Path:
    (root / "shared").mkdir(exist_ok=True)
    (root / "shared" / "hello.txt").write_text("served by virtiofsd under healer\n")
    rules = root / "rules"
    rules.mkdir(exist_ok=True)
    text = (default_rules_dir() / "healing.toml").read_text(encoding="utf-8")
    for shipped, demo in DEMO_POLICY.items():
        if shipped not in text:
            msg = f"the shipped rules no longer say {shipped!r}; update healer.demo"
            raise RuntimeError(msg)
        text = text.replace(shipped, demo)
    (rules / "healing.toml").write_text(text, encoding="utf-8")
    guest = [sys.executable, "-m", "healer.sim.guest", "--log", str(root / "guest.log")]
    argv = ", ".join(f'"{a}"' for a in guest)
    config = root / "healer.toml"
    config.write_text(
        f'[healer]\njournal = "{root / "journal"}"\nrules = "{rules}"\nmetrics = "off"\n\n'
        f'[[share]]\nname = "{SHARE}"\nsocket = "{root / f"{SHARE}.sock"}"\n'
        f'shared_dir = "{root / "shared"}"\nlog = "{root / "virtiofsd.log"}"\n\n'
        f'[vmm]\napi_socket = "{root / "ch-api.sock"}"\n\n'
        f'[guest]\nremount = [{argv}]\nmount_point = "/mnt/{SHARE}"\n\n'
        f'[[source]]\npath = "{root / "cloud-hypervisor.log"}"\nname = "cloud-hypervisor"\n',
        encoding="utf-8",
    )
    return config


def _daemon_pid(watchdog: Watchdog) -> int | None:
    return watchdog.daemon_pid(SHARE)


def _kill_daemon(watchdog: Watchdog) -> None:
    pid = _daemon_pid(watchdog)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)


def _wait(
    condition: Callable[[], object],
    bound_s: float,
    what: str,
    printer: _Printer | None = None,
) -> None:
    deadline = time.monotonic() + bound_s
    while not condition():
        if printer is not None:
            printer.poll()
        if time.monotonic() > deadline:
            raise DemoFailed(f"{what} within {bound_s:.0f} s")
        time.sleep(0.05)
    if printer is not None:
        printer.poll()


def _settle(printer: _Printer, quiet_s: float = 0.3, bound_s: float = 5.0) -> None:
    """Let the lines a fault caused arrive (the VMM's log comes a poll after stderr)."""
    deadline = time.monotonic() + bound_s
    seen = -1
    while printer.seen != seen and time.monotonic() < deadline:
        seen = printer.seen
        time.sleep(quiet_s)
        printer.poll()


def _step(out: TextIO, text: str) -> None:
    print(f"\n{text}", file=out, flush=True)


def _summary(out: TextIO, printer: _Printer, root: Path, *, kept: bool) -> None:
    ran: dict[str, dict[str, int]] = {}
    for key, action in printer.actions.items():
        status = printer.outcomes.get(key, "suppressed or pending")
        ran.setdefault(action, {}).setdefault(status, 0)
        ran[action][status] += 1
    print(f"\nsummary: {printer.events} events journaled", file=out)
    for healed in printer.faults:
        print(f"  {healed}", file=out)
    if printer.fault and not any(f.startswith(printer.fault) for f in printer.faults):
        print(f"  {printer.fault} NOT healed", file=out)
    for action, statuses in sorted(ran.items()):
        counts = ", ".join(f"{n} {s}" for s, n in sorted(statuses.items()))
        print(f"  {action:<20} {counts}", file=out)
    if not kept:
        return  # the files go with the temporary directory
    report = root / "report.md"
    try:
        _write_report(root / "journal", report)
        print(f"postmortem report: {report}", file=out)
    except Exception as exc:
        print(f"postmortem report not written: {exc}", file=out)
    print(f"journal: {root / 'journal'} (healer replay --journal DIR reads it)", file=out)


def _write_report(journal: Path, report: Path) -> None:
    """The journal as it was recorded, by the library `healer replay --report` uses."""
    from healer.pipeline import render_report, replay_journal  # noqa: PLC0415 - at the end only

    report.write_text(render_report(replay_journal(journal, report=True)), encoding="utf-8")


def _metrics(out: TextIO, watchdog: Watchdog) -> None:
    """What Prometheus would have scraped (the demo serves no endpoint)."""
    from prometheus_client import generate_latest  # noqa: PLC0415

    wanted = (
        "healer_virtiofsd_restarts_total",
        "healer_recoveries_total",
        "healer_actions_total",
        "healer_recovery_duration_seconds_count",
        "healer_recovery_duration_seconds_sum",
    )
    lines = generate_latest(watchdog.metrics.registry).decode().splitlines()
    shown = [line for line in lines if line.startswith(wanted) and not line.endswith(" 0.0")]
    print("metrics (as /metrics would serve them):", file=out)
    for line in shown:
        print(f"  {line}", file=out)
