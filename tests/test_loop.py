"""The decision loop's inputs: what reaches the journal, and in what order.

A daemon's start is journaled before its exit. The holder reports a daemon's exit from
the client's reader thread, as a message on the loop's inbox, the moment it happens; a
virtiofsd that cannot start (a missing shared directory) exits within milliseconds of
its spawn. Its ``VirtiofsdStarted`` must still be journaled first: the exit has the
higher position on the daemon's stream, and a fact below the last position journaled
would be dropped.

A tailed log decides only about the configured shares: names it invents make nothing.
A daemon's stderr copy is private.
"""

from __future__ import annotations

import stat
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from conftest import wait_for
from rulepatch import shipped_rules

from healer.config import ShareConfig, SourceConfig
from healer.engine import Engine
from healer.events import VirtiofsdExited, VirtiofsdStarted
from healer.holder import protocol as p
from healer.journal import EventRecord, Journal, read_records
from healer.live.daemons import DaemonTable
from healer.live.logs import TailedLog, TailedLogs
from healer.live.loop import Loop
from healer.live.messages import Wake
from healer.live.stderr import StderrFeed
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


def test_a_log_naming_shares_the_configuration_lacks_makes_no_state_of_them(
    tmp_path: Path,
) -> None:
    """20,000 made-up tags in one burst (a guest console can print anything) are
    counted and dropped: no share state, no decision, no journal record about them;
    the configured share's own event in the same burst is decided."""
    share = ShareConfig("fs0", "fs0", str(tmp_path / "fs0.sock"), str(tmp_path / "shared"))
    runner = Runner(Engine(shipped_rules()), Journal(tmp_path / "journal"), now=time.time)
    runner.start()
    keys = ShareKeys([ShareNames(share.name, share.tag, share.socket)])
    log = tmp_path / "console.log"
    made_up = "".join(f"[    1.0] virtio-fs: tag <x{n}> not found\n" for n in range(20_000))
    log.write_text(made_up + "[    2.0] virtio-fs: tag <fs0> not found\n")
    logs = TailedLogs(runner, keys, NULL_OBSERVER, LineTally())
    logs.start([TailedLog(SourceConfig(str(log), "console"))])
    for _ in range(10):  # a big file is read over a few turns
        logs.read()
    runner.flush()

    assert logs.unknown == {"console": 20_000}
    assert set(runner.state.shares) == {"fs0"}
    about = {
        r.event.share for r in read_records(tmp_path / "journal") if isinstance(r, EventRecord)
    }
    assert about == {"fs0"}
    # The bound stated: the journal holds the one event, its decisions and positions
    # (a few KiB), far below the 20,000 phantom shares' 51.7 MB before.
    written = sum(f.stat().st_size for f in (tmp_path / "journal").iterdir())
    assert written < 64 * 1024, written


def test_the_copy_of_a_daemons_stderr_is_private_and_follows_no_planted_link(
    tmp_path: Path,
) -> None:
    """``share.log`` gets what virtiofsd wrote (it names the host's files): mode 0600,
    and a symlink someone put at the path is not written through."""
    runner = Runner(Engine(shipped_rules()), None)
    spool = tmp_path / "fs0.1.log"
    spool.write_bytes(b"[2026-12-03T10:00:00Z INFO  virtiofsd] Waiting for vhost-user socket\n")
    copy, planted, victim = tmp_path / "fs0.log", tmp_path / "fs1.log", tmp_path / "victim"
    victim.write_text("")
    planted.symlink_to(victim)
    copies: dict[str, str | None] = {"fs0": str(copy), "fs1": str(planted)}
    feed = StderrFeed(tmp_path, runner, observer=NULL_OBSERVER, tally=LineTally(), copies=copies)
    feed.follow("fs0", 1, None, spool)
    feed.follow("fs1", 1, None, spool)
    feed.read()
    feed.close()
    assert copy.read_bytes() == spool.read_bytes()
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert victim.read_text() == ""  # the link was refused (and the refusal logged)


def test_a_flooded_stderr_file_is_read_to_its_end_without_waiting_for_ticks(
    tmp_path: Path,
) -> None:
    """A daemon wrote 3 MiB to its stderr and fell silent: no watcher wakes the loop
    again, and its clock stands still here (no safety tick ever comes). The loop reads
    the file to its end anyway, one bounded block a turn, coming back at once while
    the file holds more (it read 256 KiB a second before: 4 k lines/s)."""
    share = ShareConfig("fs0", "fs0", str(tmp_path / "fs0.sock"), str(tmp_path / "shared"))
    runner = Runner(Engine(shipped_rules()), None)
    keys = ShareKeys([ShareNames(share.name, share.tag, share.socket)])
    line = b"[2026-12-04T10:00:00Z DEBUG virtiofsd::server] Replying OK, unique: 7\n"
    spool = tmp_path / "fs0.1.log"
    spool.write_bytes(line * (3 * 1024 * 1024 // len(line)))
    tally = LineTally()
    feed = StderrFeed(tmp_path, runner, observer=NULL_OBSERVER, tally=tally, copies={})
    feed.follow("fs0", 1, 4242, spool)
    table = DaemonTable(
        [share],
        holder=DiesAtOnce(),  # type: ignore[arg-type]  # never asked to spawn here
        feed=feed,
        post=lambda _message: None,
        generations=lambda _name: None,
    )
    frozen = time.time()
    loop = Loop(
        runner,
        table,
        feed,
        TailedLogs(runner, keys, NULL_OBSERVER, LineTally()),
        observer=NULL_OBSERVER,
        clock=lambda: frozen,
    )
    stop = threading.Event()
    runner.start()
    loop.changed()  # the watcher's one wake-up, for the write
    worker = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    worker.start()
    try:
        wait_for(lambda: feed.spools[("fs0", 1)].offset == spool.stat().st_size)
    finally:
        stop.set()
        loop.post(Wake())
        worker.join(10)
    assert feed.read() is False  # nothing more, and a partial line would not say more
