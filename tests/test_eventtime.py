"""Event time: timestamp formats and the anchoring rule for relative clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from healer.eventtime import (
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


def test_precise_wall_wins_and_anchors_the_uptime_clock() -> None:
    clock = SourceClock(default_year=2022)
    assert clock.resolve(wall=T0, precise=True, uptime=70.0, domain="ch") == T0
    later = clock.resolve(wall=None, precise=False, uptime=75.5, domain="ch")
    assert later == T0 + timedelta(seconds=5.5)


def test_an_uptime_clock_is_per_domain() -> None:
    clock = SourceClock(default_year=2022)
    clock.resolve(wall=T0, precise=True, uptime=70.0, domain="ch")
    # The guest's dmesg clock is another clock; without an anchor it carries forward.
    assert clock.resolve(wall=None, precise=False, uptime=3.0, domain="guest") == T0


def test_coarse_wall_is_used_when_nothing_better() -> None:
    clock = SourceClock(default_year=2022)
    minute = datetime(2022, 12, 26, 6, 48, tzinfo=UTC)
    assert clock.resolve(wall=minute, precise=False, uptime=70.5, domain="ch") == minute


def test_ingest_time_anchors_a_live_unanchored_clock() -> None:
    clock = SourceClock(default_year=2022)
    first = clock.resolve(wall=None, precise=False, uptime=10.0, domain="ch", ingest=T0)
    second = clock.resolve(wall=None, precise=False, uptime=12.0, domain="ch", ingest=T0)
    assert (first, second) == (T0, T0 + timedelta(seconds=2))


def test_unknown_time_carries_forward_then_is_none() -> None:
    clock = SourceClock(default_year=2022)
    assert clock.resolve(wall=None, precise=False, uptime=None, domain=None) is None
    clock.resolve(wall=T0, precise=True, uptime=None, domain=None)
    assert clock.resolve(wall=None, precise=False, uptime=None, domain=None) == T0
    assert clock.year == 2022
