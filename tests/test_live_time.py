"""Event time of records read live: the parser passes each record's read time to its clock."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from healer.config import SourceConfig
from healer.events import Event
from healer.live.logs import TailedLog, TailedLogs
from healer.observe import NULL_OBSERVER, LineTally
from healer.parse import Checkpoint, Parsed, SourceParser
from healer.runner import Runner
from healer.shares import ShareKeys, ShareNames

T0 = datetime(2024, 12, 23, 7, 44, 50, tzinfo=UTC)
RUST = b"[2024-12-23T07:44:50Z INFO  virtiofsd] Client disconnected, shutting down\n"
RUST_2099 = b"[2099-01-01T00:00:00Z INFO  virtiofsd] Client disconnected, shutting down\n"
VM_SH = b"20241223T07:44 virtio_loop: Exit\n"
MINUTE_STAMP = datetime(2024, 12, 23, 7, 44, tzinfo=UTC)


def ch(uptime: float, wrapper: bytes = b"") -> bytes:
    """A v49+ cloud-hypervisor line that carries only its uptime (unless wrapped)."""
    return (
        wrapper
        + (
            f"cloud-hypervisor: {uptime:10.6f}s: <vmm> INFO:virtio-devices/src/vhost_user/mod.rs:393"
            " -- vhost-user backend for socket /run/fs.sock disconnected, attempting reconnection\n"
        ).encode()
    )


def _s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def _times(items: list[Parsed]) -> list[datetime | None]:
    return [i.time for i in items if isinstance(i, Event)]


def live(parser: SourceParser, lines: list[tuple[bytes, datetime]], offset: int = 0) -> list[Event]:
    """Feed each line as its own block at its read time, then end the input."""
    items: list[Parsed] = []
    for line, read in lines:
        items += parser.feed(line, offset, ingest=read)
        offset += len(line)
    items += parser.close()
    return [i for i in items if isinstance(i, Event)]


def test_a_rust_whole_second_line_read_at_once_takes_the_read_time() -> None:
    parser = SourceParser("vfs", default_year=2024)
    (event,) = live(parser, [(RUST, T0 + _s(0.9))])
    assert event.time == T0 + _s(0.9)


def test_a_rust_whole_second_line_read_from_a_backlog_takes_its_stamp() -> None:
    parser = SourceParser("vfs", default_year=2024)
    (event,) = live(parser, [(RUST, T0 + _s(30))])
    assert event.time == T0


def test_a_vm_sh_minute_prefix_line() -> None:
    at_once = live(SourceParser("vm", default_year=2024), [(VM_SH, MINUTE_STAMP + _s(42))])
    backlog = live(SourceParser("vm", default_year=2024), [(VM_SH, MINUTE_STAMP + _s(300))])
    replay = SourceParser("vm", default_year=2024).parse_all(VM_SH)
    assert [e.time for e in at_once] == [MINUTE_STAMP + _s(42)]
    assert [e.time for e in backlog] == [MINUTE_STAMP]
    assert _times(replay) == [MINUTE_STAMP]


def test_a_vm_sh_cloud_hypervisor_line_uses_the_uptime_estimate() -> None:
    prefix = b"20241223T07:44 "
    parser = SourceParser("vm", default_year=2024)
    events = live(parser, [(ch(10.0, prefix), T0), (ch(10.5, prefix), T0 + _s(3))])
    assert [e.time for e in events] == [T0, T0 + _s(0.5)]


def test_a_2099_line_read_live_is_dated_at_its_read_time_and_counted() -> None:
    parser = SourceParser("vfs", default_year=2024)
    (event,) = live(parser, [(RUST_2099, T0)])
    assert event.time == T0
    assert parser.stats.future_times == 1
    assert parser.clock.last == T0
    # Replay has no read time to compare with: the stamp, as before.
    replay = SourceParser("vfs", default_year=2024)
    assert _times(replay.parse_all(RUST_2099)) == [datetime(2099, 1, 1, tzinfo=UTC)]
    assert replay.stats.future_times == 0


def test_the_skew_tolerance_is_how_far_ahead_a_stamp_may_be() -> None:
    """With 10 minutes allowed, a line 5 minutes ahead keeps its stamp; 20 minutes
    ahead is read as of its read time and counted."""
    five = b"[2024-12-23T07:49:50Z INFO  virtiofsd] Client disconnected, shutting down\n"
    twenty = b"[2024-12-23T08:04:50Z INFO  virtiofsd] Client disconnected, shutting down\n"
    parser = SourceParser("vfs", default_year=2024, skew_tolerance=600.0)
    events = live(parser, [(five, T0), (twenty, T0 + _s(1))])
    assert [e.time for e in events] == [T0 + _s(300), T0 + _s(1)]
    assert parser.stats.future_times == 1
    strict = SourceParser("vfs", default_year=2024)  # the default, 2 s
    assert [e.time for e in live(strict, [(five, T0)])] == [T0]
    assert strict.stats.future_times == 1


def test_the_tally_counts_future_stamps_across_parsers() -> None:
    """What /metrics shows as limit="clock_skew": every parser's count, a new parser
    for the same source adding to it rather than starting the total again."""
    tally = LineTally()
    first = SourceParser("vfs", default_year=2024)
    live(first, [(RUST_2099, T0), (RUST_2099, T0)])
    tally.report(NULL_OBSERVER, "vfs", first)
    tally.report(NULL_OBSERVER, "vfs", first)  # reported twice, counted once
    second = SourceParser("vfs", default_year=2024)
    live(second, [(RUST_2099, T0)])
    tally.report(NULL_OBSERVER, "vfs", second)
    assert tally.future_times == 3


def test_tailed_logs_use_the_configured_skew(tmp_path: Path) -> None:
    log = tmp_path / "vfs.log"
    log.write_bytes(b"[2024-12-23T07:49:50Z INFO  virtiofsd] Client disconnected, shutting down\n")
    keys = ShareKeys([ShareNames("s", "tag", "/run/fs.sock")])
    for skew, expected in ((600.0, T0 + _s(300)), (2.0, T0)):
        runner = _Collecting()
        tally = LineTally()
        logs = TailedLogs(
            cast(Runner, runner),
            keys,
            NULL_OBSERVER,
            tally,
            clock=T0.timestamp,
            clock_skew=skew,
        )
        logs.start([TailedLog(SourceConfig(str(log), "vfs"))])
        try:
            logs.read()
        finally:
            logs.close()
        assert [e.time for e in runner.events] == [expected]
        assert tally.future_times == (0 if skew == 600.0 else 1)


def test_a_future_wrapper_stamp_does_not_anchor_the_vmm_clock() -> None:
    wrapped = ch(10.0, b"2099-01-01T00:00:00.250000Z ")
    parser = SourceParser("ch", default_year=2024)
    events = live(parser, [(wrapped, T0), (ch(11.0), T0 + _s(1.5))])
    assert [e.time for e in events] == [T0, T0 + _s(1)]
    assert parser.clock.exact == set()
    assert parser.stats.future_times == 1


def test_a_precise_wrapper_fixes_the_vmm_clock_live() -> None:
    wrapped = ch(10.0, b"2024-12-23T07:44:50.500000Z ")
    parser = SourceParser("ch", default_year=2024)
    events = live(parser, [(wrapped, T0 + _s(4)), (ch(11.0), T0 + _s(1.6))])
    assert [e.time for e in events] == [T0 + _s(0.5), T0 + _s(1.5)]
    assert parser.clock.exact == {"ch"}


def test_the_last_record_at_eof_is_dated_by_its_read_time() -> None:
    """The record stays open after its block; ``close()`` alone must still date it live."""
    parser = SourceParser("ch", default_year=2024)
    assert parser.feed(ch(10.0), 0, ingest=T0) == []
    assert _times(parser.close()) == [T0]


def test_a_record_closed_by_a_later_block_keeps_its_own_read_time() -> None:
    parser = SourceParser("ch", default_year=2024)
    first = parser.feed(ch(10.0), 0, ingest=T0)
    second = parser.feed(b"unrelated line\n", 200, ingest=T0 + _s(9))
    assert (first, _times(second)) == ([], [T0])


def test_uptime_only_records_never_get_no_time_live() -> None:
    parser = SourceParser("ch", default_year=2024)
    events = live(parser, [(ch(1.0), T0), (b"virtio_loop: Exit\n", T0 + _s(2))])
    assert [e.time for e in events] == [T0, T0 + _s(2)]
    replay = SourceParser("ch", default_year=2024).parse_all(ch(1.0) + b"virtio_loop: Exit\n")
    assert _times(replay) == [None, None]


def _through_json(point: Checkpoint) -> Checkpoint:
    """As the journal stores it."""
    restored = Checkpoint.from_dict(json.loads(json.dumps(point.to_dict())))
    assert restored == point
    return restored


def test_an_estimated_anchor_survives_a_checkpoint_and_keeps_tightening() -> None:
    first = SourceParser("ch", default_year=2024)
    live(first, [(ch(10.0), T0 + _s(3))])
    point = _through_json(first.checkpoint())
    assert (point.boot, point.exact, point.uptime) == (
        {"ch": (T0 - _s(7)).isoformat()},
        (),
        {"ch": 10.0},
    )
    second = SourceParser("ch", default_year=2024, resume=point)
    reads = [(ch(20.0), T0 + _s(13.5)), (ch(21.0), T0 + _s(13.5)), (ch(22.0), T0 + _s(30))]
    events = live(second, reads, point.offset)
    # The restored boot (T0 - 7) dates the first; the second, read at once, tightens
    # it to T0 - 7.5; the third, read late, keeps that.
    assert [e.time for e in events] == [T0 + _s(13), T0 + _s(13.5), T0 + _s(14.5)]


def test_an_exact_anchor_survives_a_checkpoint_as_exact() -> None:
    first = SourceParser("ch", default_year=2024)
    live(first, [(ch(10.0, b"2024-12-23T07:44:50.500000Z "), T0 + _s(1))])
    point = _through_json(first.checkpoint())
    assert point.exact == ("ch",)
    second = SourceParser("ch", default_year=2024, resume=point)
    # Read "early" (a clock 1.5 s behind, within tolerance): an estimate would move,
    # an exact anchor does not.
    (event,) = live(second, [(ch(20.0), T0 + _s(9))], point.offset)
    assert event.time == T0 + _s(10.5)


def test_a_vmm_restarted_while_healer_was_down_is_a_new_boot() -> None:
    first = SourceParser("ch", default_year=2024)
    live(first, [(ch(100.0), T0)])
    point = _through_json(first.checkpoint())
    second = SourceParser("ch", default_year=2024, resume=point)
    restart_read = T0 + _s(500)
    events = live(second, [(ch(2.0), restart_read), (ch(3.0), restart_read + _s(1.2))])
    assert [e.time for e in events] == [restart_read, restart_read + _s(1)]


def test_a_checkpoint_from_before_exactness_was_kept_loads_as_estimates() -> None:
    old = {"offset": 10, "line": 1, "boot": {"ch": T0.isoformat()}, "last": None}
    point = Checkpoint.from_dict(old)
    assert (point.exact, point.uptime) == ((), {})
    parser = SourceParser("ch", default_year=2024, resume=point)
    (event,) = live(parser, [(ch(5.0), T0 + _s(4))], point.offset)
    assert event.time == T0 + _s(4)  # an estimate: the quicker read moves it


def test_a_record_spread_over_blocks_is_dated_by_its_first_line() -> None:
    """The head is read first; indented lines read later (one with the keyword) join it."""
    blocks = [
        b"a head without keyword\n",
        b"  more of it\n",
        b"  Client disconnected, shutting down\n",
    ]
    for every in (False, True):
        parser = SourceParser("vfs", default_year=2024, keep_unrecognized=every)
        items: list[Parsed] = []
        offset = 0
        for n, block in enumerate(blocks):
            items += parser.feed(block, offset, ingest=T0 + _s(n))
            offset += len(block)
        items += parser.close(ingest=T0 + _s(9))
        assert _times(items) == [T0], every


class _Collecting:
    """Just what :class:`TailedLogs` uses of a runner: no journal, no engine."""

    def __init__(self) -> None:
        self.tails: dict[str, Any] = {}
        self.checkpoints: dict[str, Checkpoint] = {}
        self.events: list[Event] = []

    def ingest(self, events: Iterable[Event], *_: object, **__: object) -> list[object]:
        self.events += events
        return []


def test_a_tailed_uptime_only_log_is_dated_when_read_up_to_eof(tmp_path: Path) -> None:
    """The record that ends the file is flushed at EOF with the time it was read."""
    log = tmp_path / "ch.log"
    log.write_bytes(ch(10.0) + ch(10.5))
    keys = ShareKeys([ShareNames("s", "tag", "/run/fs.sock")])
    runner = _Collecting()
    read_at = T0.timestamp() + 0.25
    logs = TailedLogs(cast(Runner, runner), keys, NULL_OBSERVER, LineTally(), clock=lambda: read_at)
    logs.start([TailedLog(SourceConfig(str(log), "ch"))])
    try:
        logs.read()
    finally:
        logs.close()
    # Both were read in one poll: neither is dated after that (the first one is not
    # revised by the second's tighter bound; it was already decided on).
    read = T0 + _s(0.25)
    assert [(e.kind, e.time) for e in runner.events] == [
        ("BackendDisconnected", read),
        ("BackendDisconnected", read),
    ]
