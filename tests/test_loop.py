"""The decision loop's order of facts: a daemon's start is journaled before its exit.

The holder reports a daemon's exit from the client's reader thread, as a message on the
loop's inbox, the moment it happens; a virtiofsd that cannot start (a missing shared
directory) exits within milliseconds of its spawn. Its ``VirtiofsdStarted`` must still
be journaled first: the exit has the higher position on the daemon's stream, and a
fact below the last position journaled would be dropped.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from rulepatch import shipped_rules

from healer.config import ShareConfig
from healer.engine import Engine
from healer.events import VirtiofsdExited, VirtiofsdStarted
from healer.holder import protocol as p
from healer.journal import EventRecord, Journal, read_records
from healer.live.daemons import DaemonTable
from healer.live.logs import TailedLogs
from healer.live.loop import Loop
from healer.observe import NULL_OBSERVER, LineTally
from healer.runner import Runner
from healer.shares import ShareKeys, ShareNames


class DiesAtOnce:
    """A holder whose every daemon exits (status 1) before ``spawn`` has returned: the
    exit notice is on the loop's inbox ahead of anything the start leads to."""

    def __init__(self) -> None:
        self.listeners: dict[str, object] = {}
        self.table: DaemonTable | None = None

    def spawn(self, share: str, generation: int, argv: Sequence[str]) -> p.Spawned:
        pid = 4000 + generation
        assert self.table is not None
        self.table.holder_exit(p.Exited(share, generation, pid, 1, None, time.time(), True))
        return p.Spawned(generation, share, generation, pid, time.time(), "/dev/null")


def test_a_daemon_that_exits_at_once_has_its_start_journaled_before_its_exit(
    tmp_path: Path,
) -> None:
    share = ShareConfig("fs0", "fs0", str(tmp_path / "fs0.sock"), str(tmp_path / "missing"))
    runner = Runner(Engine(shipped_rules()), Journal(tmp_path / "journal"), now=time.time)
    keys = ShareKeys([ShareNames(share.name, share.tag, share.socket)])
    holder = DiesAtOnce()
    table = DaemonTable(
        [share],
        holder=holder,  # type: ignore[arg-type]  # the part of HolderClient start() uses
        feed=None,
        post=lambda _message: None,  # the loop's, once it is made
        generations=lambda _name: None,
    )
    holder.table = table
    logs = TailedLogs(runner, keys, NULL_OBSERVER, LineTally())
    loop = Loop(runner, table, None, logs, observer=NULL_OBSERVER)
    table.post = loop.post
    runner.start()

    assert table.start("fs0") is None
    loop.drain()
    runner.flush()

    journaled = [
        r.event
        for r in read_records(tmp_path / "journal")
        if isinstance(r, EventRecord) and isinstance(r.event, VirtiofsdStarted | VirtiofsdExited)
    ]
    assert [(type(e).__name__, e.origin.pid) for e in journaled] == [
        ("VirtiofsdStarted", 4001),
        ("VirtiofsdExited", 4001),
    ]
