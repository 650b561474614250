"""A wrapper that stamps a batch dump, told by the uptime on its records (rule 5 of
healer/eventtime.py).

The lines are the embedded incident's shape: docker printing cloud-hypervisor's
boot.log in one go, so its stamps lie within milliseconds while the uptimes on the
same records run a minute apart. The times a reader works out from the uptimes are
stated by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from healer.events import Event
from healer.eventtime import DUMP_GAP, SourceClock
from healer.parse import ClockNote, SourceParser
from healer.pipeline.replay import Input, replay

RESET = (
    "2022-12-26T06:48:09.081000000Z cloud-hypervisor: {up}s: INFO:devices/src/acpi.rs:39"
    " -- ACPI Reboot signalled\n"
)
TIMEOUT = (
    "2022-12-26T06:48:09.082698957Z cloud-hypervisor: {up}s:  ERROR:virtio-devices/src/"
    "vhost_user/vu_common_ctrl.rs:410 -- Failed connecting the backend after trying for"
    " 1 minute: VhostUserProtocol(SocketConnect(Os {{ code: 111, kind: ConnectionRefused,"
    ' message: "Connection refused" }}))\n'
)
DUMPED = RESET.format(up="12.501173390") + TIMEOUT.format(up="70.509301809")
# cloud-hypervisor started at 06:48:09.082698 - 70.509302 = 06:46:58.573396 (line 2
# is the latest record, so the nearest its stamp is to when it was written); the reset
# at uptime 12.501173 was at 06:47:11.074569, not at its stamp 06:48:09.081.
RESET_AT = datetime(2022, 12, 26, 6, 47, 11, 74569, tzinfo=UTC)
TIMEOUT_AT = datetime(2022, 12, 26, 6, 48, 9, 82698, tzinfo=UTC)
US = timedelta(microseconds=2)


def _times(items: Sequence[object]) -> list[tuple[int, datetime | None]]:
    return [(i.line, i.time) for i in items if isinstance(i, Event)]


def _near(got: list[tuple[int, datetime | None]], want: list[tuple[int, datetime]]) -> bool:
    return len(got) == len(want) and all(
        g[0] == w[0] and g[1] is not None and abs(g[1] - w[1]) <= US
        for g, w in zip(got, want, strict=True)
    )


def test_a_dumped_log_is_timed_by_cloud_hypervisors_uptime() -> None:
    items = SourceParser("t", default_year=2024).parse_all(DUMPED.encode())
    assert _near(_times(items), [(1, RESET_AT), (2, TIMEOUT_AT)])
    notes = [i for i in items if isinstance(i, ClockNote)]
    assert [(n.line, n.what, n.wrapper) for n in notes] == [(2, "dump", "ch")]
    assert notes[0].text == (
        "wrapper timestamps are a batch dump; times from cloud-hypervisor's uptime,"
        " anchored at line 2 (70.509 s = 2022-12-26T06:48:09.082Z)"
    )


@pytest.mark.parametrize("keep_unrecognized", [False, True])
def test_a_replay_of_a_dumped_log_times_it_so_on_both_paths(
    tmp_path: Path, keep_unrecognized: bool
) -> None:
    log = tmp_path / "docker.log"
    log.write_text(DUMPED)
    items = list(
        replay([Input("t", str(log))], default_year=2024, keep_unrecognized=keep_unrecognized)
    )
    assert _near(_times(items), [(1, RESET_AT), (2, TIMEOUT_AT)])


def test_without_the_prescan_the_dump_is_found_at_the_record_that_shows_it() -> None:
    """The live tailer's way in (no look at the start): line 1 keeps its stamp, line 2
    shows the dump and is timed by the uptime from there on, and the note says where."""
    parser = SourceParser("t", default_year=2024)
    third = RESET.format(up="71.000000000").replace("09.081000000", "10.000000000")
    items = parser.feed((DUMPED + third).encode(), 0) + parser.close()
    boot = TIMEOUT_AT - timedelta(seconds=70.509302)
    assert _near(
        _times(items),
        [
            (1, datetime(2022, 12, 26, 6, 48, 9, 81000, tzinfo=UTC)),
            (2, TIMEOUT_AT),
            (3, boot + timedelta(seconds=71)),
        ],
    )
    assert [i.line for i in items if isinstance(i, ClockNote)] == [2]


def test_honest_stamps_are_kept_and_say_nothing() -> None:
    """The same two records written when they happened: 58 s apart on both clocks."""
    honest = RESET.format(up="12.501173390").replace("06:48:09.081", "06:47:11.081")
    items = SourceParser("t", default_year=2024).parse_all(
        (honest + TIMEOUT.format(up="70.509301809")).encode()
    )
    assert _times(items) == [
        (1, datetime(2022, 12, 26, 6, 47, 11, 81000, tzinfo=UTC)),
        (2, TIMEOUT_AT),
    ]
    assert not [i for i in items if isinstance(i, ClockNote)]


def test_a_restarted_cloud_hypervisor_is_not_a_dump() -> None:
    """Its uptime starts again from zero: a later start, not an earlier one."""
    restarted = TIMEOUT.format(up="70.509301809") + RESET.format(up="0.100000000").replace(
        "06:48:09.081", "06:48:19.000"
    )
    items = SourceParser("t", default_year=2024).parse_all(restarted.encode())
    assert _times(items) == [
        (1, TIMEOUT_AT),
        (2, datetime(2022, 12, 26, 6, 48, 19, tzinfo=UTC)),
    ]
    assert not [i for i in items if isinstance(i, ClockNote)]


T0 = datetime(2026, 12, 1, tzinfo=UTC)


@given(
    st.lists(st.floats(min_value=0.0, max_value=DUMP_GAP * 0.9), min_size=2, max_size=20),
    st.floats(min_value=0.0, max_value=1e5),
)
def test_read_delays_under_the_gap_are_never_a_dump(delays: list[float], start: float) -> None:
    """A program that logs once a second, each line stamped up to 0.9 of the gap late:
    the stamps are believed, as written."""
    clock = SourceClock(default_year=2026)
    pairs = [(T0 + timedelta(seconds=n + d), start + n) for n, d in enumerate(delays)]
    assert clock.anchor_dump([(wall, up, "ch") for wall, up in pairs]) == []
    for wall, up in pairs:
        assert clock.resolve(wall=wall, uptime=up, domain="ch") == wall
    assert clock.dumped == set()


@given(st.integers(min_value=2, max_value=30), st.floats(min_value=DUMP_GAP + 0.1, max_value=600))
def test_a_dump_anchors_at_the_earliest_start_any_record_gives(n: int, span: float) -> None:
    """n records spread over ``span`` s of uptime, all stamped in one instant: each is
    timed that instant minus what remains of the span."""
    clock = SourceClock(default_year=2026)
    ups = [span * i / (n - 1) for i in range(n)]
    pairs = [(T0, up, "ch") for up in ups]
    assert clock.anchor_dump(pairs) == [("ch", n - 1)]
    for up in ups:
        got = clock.resolve(wall=T0, uptime=up, domain="ch")
        assert got is not None
        assert abs(got - (T0 - timedelta(seconds=span - up))) <= US
