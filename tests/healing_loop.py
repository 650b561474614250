"""A small, complete healing loop for crash tests: log file -> parser -> runner -> world.

The "world" stands in for what actions change (virtiofsd, the VMM, the guest): a file
that gets one line per executed action, written and synced by the executor. It also
answers the runner's question after a crash: was this started action done?
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from healer.engine import Decision, Engine, Status
from healer.events import Event
from healer.journal import Journal
from healer.parse import SourceParser
from healer.rulefiles import load_rules
from healer.runner import Runner
from healer.sources import read_batches

ROOT = Path(__file__).resolve().parent.parent
SOURCE = "virtiofsd.log"


class World:
    """Executor and checker backed by an append-only file of executed keys."""

    def __init__(self, path: Path, *, delay_s: float = 0.0, journal: Path | None = None) -> None:
        self.path = path
        self.delay_s = delay_s
        self.journal = journal
        self.positions: dict[str, int] = {}

    def executed(self) -> list[str]:
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        return [line.decode() for line in data.split(b"\n")[:-1]]

    def run(self, decision: Decision) -> Status:
        if self.journal is not None:  # where the journal ended when the action began
            (segment,) = self.journal.glob("segment-*")
            self.positions[decision.key] = segment.stat().st_size
        if self.delay_s:
            time.sleep(self.delay_s)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, decision.key.encode() + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        return Status.SUCCEEDED

    def check(self, decision: Decision) -> str:
        return "done" if decision.key in self.executed() else "redo"


def drive(log: Path, journal_dir: Path, world: World, *, block: int = 512) -> Runner:
    """Run the loop over ``log`` from wherever the journal says it got to."""
    journal = Journal(journal_dir, segment_bytes=1 << 30)
    runner = Runner(
        Engine(load_rules(ROOT / "rules")), journal, world, checker=world, snapshot_every=10**9
    )
    runner.start()
    checkpoint = runner.checkpoints.get(SOURCE)
    parser = SourceParser(SOURCE, default_year=2026, resume=checkpoint)
    start = checkpoint.offset if checkpoint else 0
    with log.open("rb") as stream:
        stream.seek(start)
        for data, offset in read_batches(stream, chunk_size=block, start=start):
            events = [e for e in parser.feed(data, offset) if isinstance(e, Event)]
            runner.ingest(events, (SOURCE, parser.checkpoint()))
        runner.ingest([e for e in parser.close() if isinstance(e, Event)])
    journal.close()
    return runner


def make_log(path: Path, incidents: int = 40) -> None:
    """Exits, reconnects, storms and connect timeouts over several shares."""
    lines = []
    second = 0
    for n in range(incidents):
        second += 7 if n % 9 else 90
        stamp = f"2026-01-01T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z"
        if n % 5 == 4:
            lines.append(
                f"{stamp} cloud-hypervisor: 70.5s: <vmm> ERROR:vu_common_ctrl.rs:462 -- "
                f"Failed connecting the backend after trying for 1 minute for socket "
                f"/run/fs{n % 3}.sock: VhostUserProtocol(SocketConnect(Os {{ code: 111, "
                f'kind: ConnectionRefused, message: "Connection refused" }}))'
            )
        else:
            lines.append(f"[{stamp} INFO  virtiofsd] Client disconnected, shutting down")
        if n % 3 == 0:
            lines.append(f"[{stamp} INFO  virtiofsd] Waiting for vhost-user socket connection...")
            lines.append(f"[{stamp} INFO  virtiofsd] Client connected, servicing requests")
        lines.append(f"[{stamp} DEBUG virtiofsd::server] Received request {n}")
    path.write_text("\n".join(lines) + "\n")
