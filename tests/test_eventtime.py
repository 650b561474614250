"""Event time: timestamp formats, the anchoring rule for relative clocks, live bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healer.eventtime import (
    MINUTE,
    SKEW_TOLERANCE,
    WHOLE_SECONDS,
    SourceClock,
    duration_seconds,
    parse_compact_minute,
    parse_iso,
    parse_syslog,
)


@pytest.mark.parametrize(
    ("value", "unit", "seconds"),
    [
        ("186", "µs", 186e-6),
        ("19.503487", "ms", 0.019503487),
        ("10.301501007", "s", 10.301501007),
        ("500", "ns", 5e-7),
        ("1.010001", "s", 1.010001),
    ],
)
def test_rust_duration_units(value: str, unit: str, seconds: float) -> None:
    assert duration_seconds(value, unit) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2022-12-26T06:48:09.082698957Z", datetime(2022, 12, 26, 6, 48, 9, 82698, UTC)),
        ("2024-12-23T04:50:24Z", datetime(2024, 12, 23, 4, 50, 24, tzinfo=UTC)),
        ("2022-01-25 21:30:55.948856+0000", datetime(2022, 1, 25, 21, 30, 55, 948856, UTC)),
        ("2020-01-01 10:00:00.50+0200", datetime(2020, 1, 1, 8, 0, 0, 500000, UTC)),
        ("2024-07-30 00:00:12,662", datetime(2024, 7, 30, 0, 0, 12, 662000, UTC)),
        ("2024-02-30T00:00:00Z", None),
        ("not a time", None),
    ],
)
def test_iso_forms(text: str, expected: datetime | None) -> None:
    assert parse_iso(text) == expected


def test_compact_minute_and_syslog() -> None:
    assert parse_compact_minute("20221226T06:48") == datetime(2022, 12, 26, 6, 48, tzinfo=UTC)
    assert parse_syslog("Oct", "5", "20:15:53", 2020) == datetime(
        2020, 10, 5, 20, 15, 53, tzinfo=UTC
    )
    # VC02's reporter cut the first letter: "ct 05".
    assert parse_syslog("ct", "05", "20:15:53", 2020) == datetime(
        2020, 10, 5, 20, 15, 53, tzinfo=UTC
    )
    assert parse_syslog("Xyz", "05", "20:15:53", 2020) is None


T0 = datetime(2022, 12, 26, 6, 48, 9, tzinfo=UTC)
MINUTE_STAMP = datetime(2022, 12, 26, 6, 48, tzinfo=UTC)


def _s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


# --- replay (no ingest time): today's rule, unchanged ---------------------------


def test_precise_wall_wins_and_anchors_the_uptime_clock() -> None:
    clock = SourceClock(default_year=2022)
    assert clock.resolve(wall=T0, uptime=70.0, domain="ch") == T0
    later = clock.resolve(wall=None, uptime=75.5, domain="ch")
    assert later == T0 + timedelta(seconds=5.5)
    assert clock.exact == {"ch"}


def test_an_uptime_clock_is_per_domain() -> None:
    clock = SourceClock(default_year=2022)
    clock.resolve(wall=T0, uptime=70.0, domain="ch")
    # The guest's dmesg clock is another clock; without an anchor it carries forward.
    assert clock.resolve(wall=None, uptime=3.0, domain="guest") == T0


def test_coarse_wall_is_used_when_nothing_better() -> None:
    clock = SourceClock(default_year=2022)
    assert clock.resolve(wall=MINUTE_STAMP, precision=MINUTE, uptime=70.5, domain="ch") == (
        MINUTE_STAMP
    )


def test_replay_whole_seconds_count_as_precise_and_anchor() -> None:
    """Without a read time a whole-second stamp is the time and fixes the clock, as before."""
    clock = SourceClock(default_year=2022)
    assert clock.resolve(wall=T0, precision=WHOLE_SECONDS, uptime=10.0, domain="ch") == T0
    assert clock.resolve(wall=None, uptime=10.25, domain="ch") == T0 + _s(0.25)
    # A minute stamp loses to the anchored clock, as before.
    assert clock.resolve(wall=MINUTE_STAMP, precision=MINUTE, uptime=11.0, domain="ch") == (
        T0 + _s(1)
    )


def test_replay_believes_a_far_future_stamp_and_keeps_its_anchor() -> None:
    """Replay has nothing to compare a stamp with; an uptime going back changes nothing."""
    clock = SourceClock(default_year=2022)
    future = datetime(2099, 1, 1, tzinfo=UTC)
    assert clock.resolve(wall=future, uptime=None, domain=None) == future
    assert clock.future_times == 0
    clock.resolve(wall=T0, uptime=100.0, domain="ch")
    assert clock.resolve(wall=None, uptime=1.0, domain="ch") == T0 - _s(99)


def test_unknown_time_carries_forward_then_is_none() -> None:
    clock = SourceClock(default_year=2022)
    assert clock.resolve(wall=None) is None
    clock.resolve(wall=T0)
    assert clock.resolve(wall=None) == T0
    assert clock.year == 2022


# --- live (with the ingest time) -------------------------------------------------


def test_a_live_estimate_never_dates_a_record_after_it_was_read() -> None:
    """Two records read in one poll: the later uptime moves the boot time back."""
    clock = SourceClock(default_year=2022)
    first = clock.resolve(wall=None, uptime=10.0, domain="ch", ingest=T0)
    second = clock.resolve(wall=None, uptime=12.0, domain="ch", ingest=T0)
    assert (first, second) == (T0, T0)
    assert clock.boot == {"ch": T0 - _s(12)}
    assert clock.exact == set()


def test_the_estimate_tightens_to_the_smallest_read_delay() -> None:
    """Written at boot+10, +11, +12, read 5 s, 0.2 s and 3 s later."""
    boot = T0
    clock = SourceClock(default_year=2022)
    times = [
        clock.resolve(wall=None, uptime=up, domain="ch", ingest=boot + _s(up + delay))
        for up, delay in ((10.0, 5.0), (11.0, 0.2), (12.0, 3.0))
    ]
    assert times == [boot + _s(15), boot + _s(11.2), boot + _s(12.2)]


@settings(max_examples=300)
@given(
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=0, max_value=10**9),
    st.lists(st.tuples(st.integers(0, 10**8), st.integers(0, 10**8)), min_size=1, max_size=40),
)
def test_live_uptime_times_are_bounded_by_truth_and_read_time(
    boot_us: int, first_up_us: int, steps: list[tuple[int, int]]
) -> None:
    """Uptime-only records read after random delays: truth <= time <= ingest, and the
    error is exactly the smallest read delay so far (all in whole microseconds)."""
    boot = T0 + timedelta(microseconds=boot_us)
    clock = SourceClock(default_year=2022)
    uptime_us, read = first_up_us, boot
    smallest: timedelta | None = None
    for gap_us, delay_us in steps:
        uptime_us += gap_us
        written = boot + timedelta(microseconds=uptime_us)
        read = max(read, written + timedelta(microseconds=delay_us))  # read in order
        time = clock.resolve(wall=None, uptime=uptime_us / 1e6, domain="ch", ingest=read)
        assert time is not None
        assert written <= time <= read
        smallest = read - written if smallest is None else min(smallest, read - written)
        assert time - written == smallest


def test_a_precise_pair_fixes_the_clock_over_the_estimate() -> None:
    clock = SourceClock(default_year=2022)
    assert clock.resolve(wall=None, uptime=10.0, domain="ch", ingest=T0 + _s(13)) == T0 + _s(13)
    exact = T0 + _s(20.5)
    assert clock.resolve(wall=exact, uptime=20.0, domain="ch", ingest=T0 + _s(21)) == exact
    assert (clock.boot, clock.exact) == ({"ch": T0 + _s(0.5)}, {"ch"})
    # A later quick read no longer moves an exact anchor.
    assert clock.resolve(wall=None, uptime=30.0, domain="ch", ingest=T0 + _s(30.2)) == (
        T0 + _s(30.5)
    )


def test_a_vmm_restart_starts_a_new_estimate() -> None:
    """Uptime going back is a new boot: the old (even exact) anchor is dropped."""
    clock = SourceClock(default_year=2022)
    clock.resolve(wall=T0 + _s(100), uptime=100.0, domain="ch", ingest=T0 + _s(100.1))
    assert clock.exact == {"ch"}
    restarted = T0 + _s(200)  # the new VMM's boot
    first = clock.resolve(wall=None, uptime=1.0, domain="ch", ingest=restarted + _s(1.3))
    second = clock.resolve(wall=None, uptime=2.0, domain="ch", ingest=restarted + _s(2.1))
    third = clock.resolve(wall=None, uptime=3.0, domain="ch", ingest=restarted + _s(3.5))
    assert (first, second, third) == (restarted + _s(1.3), restarted + _s(2.1), restarted + _s(3.1))
    assert clock.exact == set()
    assert clock.uptime == {"ch": 3.0}


@pytest.mark.parametrize(
    ("read_after", "expected_after"),
    [
        (0.9, 0.9),  # read within its own second: the read time
        (0.0, 0.0),
        (2.9, 2.9),  # within precision + tolerance
        (3.5, 0.0),  # later: a backlog, the stamp
        (30.0, 0.0),
        (-1.5, 0.0),  # the writer's clock a little ahead: the stamp is believed
    ],
)
def test_a_live_whole_second_stamp(read_after: float, expected_after: float) -> None:
    clock = SourceClock(default_year=2022)
    time = clock.resolve(wall=T0, precision=WHOLE_SECONDS, ingest=T0 + _s(read_after))
    assert time == T0 + _s(expected_after)


@pytest.mark.parametrize(
    ("read_after", "expected_after"),
    [(30.0, 30.0), (61.5, 61.5), (62.5, 0.0), (150.0, 0.0)],
)
def test_a_live_minute_stamp(read_after: float, expected_after: float) -> None:
    clock = SourceClock(default_year=2022)
    time = clock.resolve(wall=MINUTE_STAMP, precision=MINUTE, ingest=MINUTE_STAMP + _s(read_after))
    assert time == MINUTE_STAMP + _s(expected_after)


def test_a_live_minute_stamp_with_an_uptime_takes_the_estimate() -> None:
    """vm.sh around a cloud-hypervisor line: the uptime clock is finer than the minute."""
    clock = SourceClock(default_year=2022)
    read = MINUTE_STAMP + _s(20)
    first = clock.resolve(
        wall=MINUTE_STAMP, precision=MINUTE, uptime=50.0, domain="ch", ingest=read
    )
    second = clock.resolve(
        wall=MINUTE_STAMP, precision=MINUTE, uptime=50.25, domain="ch", ingest=read + _s(4)
    )
    assert (first, second) == (read, read + _s(0.25))


def test_a_backlog_minute_stamp_with_an_exact_clock_takes_the_clock() -> None:
    clock = SourceClock(default_year=2022)
    exact = MINUTE_STAMP + _s(10.5)
    clock.resolve(wall=exact, uptime=10.0, domain="ch", ingest=exact)
    late = clock.resolve(
        wall=MINUTE_STAMP, precision=MINUTE, uptime=40.0, domain="ch", ingest=exact + _s(600)
    )
    assert late == exact + _s(30)


def test_a_backlog_minute_stamp_beats_a_late_estimate() -> None:
    """Read ten minutes late, the estimate is ten minutes late; the stamp is nearer."""
    clock = SourceClock(default_year=2022)
    late = clock.resolve(
        wall=MINUTE_STAMP,
        precision=MINUTE,
        uptime=5.0,
        domain="ch",
        ingest=MINUTE_STAMP + _s(600),
    )
    assert late == MINUTE_STAMP


@pytest.mark.parametrize("precision", [0.0, 1e-6, WHOLE_SECONDS, MINUTE])
def test_a_far_future_stamp_is_not_believed_live(precision: float) -> None:
    clock = SourceClock(default_year=2022)
    future = datetime(2099, 1, 1, tzinfo=UTC)
    assert clock.resolve(wall=future, precision=precision, ingest=T0) == T0
    assert clock.future_times == 1
    assert clock.last == T0
    assert clock.year == 2022


def test_a_future_stamp_never_anchors_an_uptime_clock() -> None:
    clock = SourceClock(default_year=2022)
    future = datetime(2099, 1, 1, tzinfo=UTC)
    assert clock.resolve(wall=future, uptime=10.0, domain="ch", ingest=T0) == T0
    assert (clock.boot, clock.exact) == ({"ch": T0 - _s(10)}, set())


@pytest.mark.parametrize(("ahead", "believed"), [(1.5, True), (2.0, True), (2.5, False)])
def test_the_skew_tolerance_bounds_a_precise_stamp(ahead: float, believed: bool) -> None:
    clock = SourceClock(default_year=2022)
    wall = T0 + _s(ahead)
    assert clock.resolve(wall=wall, ingest=T0) == (wall if believed else T0)
    assert clock.future_times == (0 if believed else 1)


def test_the_skew_tolerance_is_a_parameter() -> None:
    assert SKEW_TOLERANCE == 2.0
    clock = SourceClock(default_year=2022, tolerance=10.0)
    assert clock.resolve(wall=T0 + _s(9), ingest=T0) == T0 + _s(9)
    assert clock.resolve(wall=T0, precision=WHOLE_SECONDS, ingest=T0 + _s(10.5)) == T0 + _s(10.5)


def test_a_live_record_without_any_clock_takes_its_read_time() -> None:
    """Live nothing is carried forward: the read time is nearer than the last time."""
    clock = SourceClock(default_year=2022)
    clock.resolve(wall=T0)
    assert clock.resolve(wall=None, ingest=T0 + _s(7)) == T0 + _s(7)
