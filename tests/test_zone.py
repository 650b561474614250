"""A zone-less header's zone, learned from the zoned stamps on its own records.

Each case is a short log in a real wording (a Rust virtiofsd under journald, a Kata
record with its own ``time=``); the UTC times a reader works out by hand from the
zoned stamps are stated here, as are the notes the source must carry.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from healer.events import Event
from healer.parse import Checkpoint, ClockNote, SourceParser
from healer.pipeline.replay import Input, replay

LISTENER = "{day} {clock} host virtiofsd[123]: Error creating listener: Address already in use\n"
RUST = (
    "{day} {clock} host virtiofsd[123]: [{stamp} INFO  virtiofsd] Waiting for vhost-user"
    " socket connection...\n"
)
KATA = (
    '{day} {clock} host kata[41442]: time="{stamp}" level=info msg="virtiofsd quits"'
    " source=virtcontainers subsystem=qemu\n"
)


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def _read(text: str, year: int = 2024) -> tuple[list[tuple[int, datetime | None]], list[str]]:
    items = SourceParser("t", default_year=year).parse_all(text.encode())
    times = [(i.line, i.time) for i in items if isinstance(i, Event)]
    notes = [i.text for i in items if isinstance(i, ClockNote)]
    return times, notes


def test_a_journald_header_two_hours_east_is_put_right_before_and_after() -> None:
    """CG15's shape: journald's local header, the Rust daemon's own UTC stamp. The
    listener errors have only the header; the stamp on line 2 says it runs 2 h ahead."""
    text = (
        LISTENER.format(day="Jul 02", clock="01:22:05")
        + RUST.format(day="Jul 02", clock="01:22:06", stamp="2023-07-01T23:22:06Z")
        + LISTENER.format(day="Jul 02", clock="01:40:00")
    )
    times, notes = _read(text)
    assert times == [
        (1, _at("2023-07-01T23:22:05Z")),
        (2, _at("2023-07-01T23:22:06Z")),
        (3, _at("2023-07-01T23:40:00Z")),
    ]
    assert notes == ["syslog header times are UTC+02:00, from the zoned stamp on line 2"]


def test_the_headers_year_comes_from_the_records_full_stamp() -> None:
    """The header says no year; the stamp says 2021, not the default 2024."""
    text = KATA.format(
        day="May 17", clock="19:43:30", stamp="2021-05-17T19:43:30.750733859-07:00"
    ) + LISTENER.format(day="May 17", clock="19:43:31")
    times, notes = _read(text)
    assert times == [(1, _at("2021-05-18T02:43:30.750733Z")), (2, _at("2021-05-18T02:43:31Z"))]
    assert notes == ["syslog header times are UTC-07:00, from the zoned stamp on line 1"]


def test_a_daylight_saving_change_is_followed_from_the_record_that_shows_it() -> None:
    """Central Europe on 26 March 2023: 02:00 local (+01:00) became 03:00 (+02:00)."""
    text = (
        KATA.format(day="Mar 26", clock="01:59:00", stamp="2023-03-26T00:59:00.5Z")
        + LISTENER.format(day="Mar 26", clock="01:59:30")
        + KATA.format(day="Mar 26", clock="03:01:00", stamp="2023-03-26T01:01:00.5Z")
        + LISTENER.format(day="Mar 26", clock="03:01:30")
    )
    times, notes = _read(text)
    assert times == [
        (1, _at("2023-03-26T00:59:00.5Z")),
        (2, _at("2023-03-26T00:59:30Z")),
        (3, _at("2023-03-26T01:01:00.5Z")),
        (4, _at("2023-03-26T01:01:30Z")),
    ]
    assert notes == [
        "syslog header times are UTC+01:00, from the zoned stamp on line 1",
        "syslog header times are UTC+02:00, from the zoned stamp on line 3"
        " (they were UTC+01:00 before it)",
    ]


def test_a_stepped_clock_teaches_nothing_and_is_said() -> None:
    """Line 2's header runs 2 h 5 min 6.8 s ahead of its own stamp, 306.8 s off the
    nearest zone: no zone is that; the +02:00 of line 1 still dates line 3."""
    text = (
        KATA.format(day="Jul 02", clock="01:00:00", stamp="2023-07-01T23:00:00.1Z")
        + KATA.format(day="Jul 02", clock="01:05:07", stamp="2023-07-01T23:00:00.2Z")
        + LISTENER.format(day="Jul 02", clock="01:00:01")
    )
    times, notes = _read(text)
    assert times[2] == (3, _at("2023-07-01T23:00:01Z"))
    assert len(notes) == 2
    assert notes[1].startswith(
        "the syslog header and the record's zoned stamp differ by 7506.800 s, 306.800 s off any"
        " zone"
    )


def test_a_source_with_no_zoned_record_reads_its_header_as_utc() -> None:
    text = LISTENER.format(day="Jul 02", clock="01:22:05") + LISTENER.format(
        day="Jul 02", clock="01:23:05"
    )
    times, notes = _read(text)
    assert times == [(1, _at("2024-07-02T01:22:05Z")), (2, _at("2024-07-02T01:23:05Z"))]
    assert notes == []


def test_new_years_eve_west_of_utc_stays_in_its_year() -> None:
    """At -07:00, 23:55 local on 31 December is 06:55 UTC on 1 January: the header's
    guessed year must not jump a year ahead of the records around it."""
    text = KATA.format(
        day="Dec 31", clock="23:50:00", stamp="2024-01-01T06:50:00.5Z"
    ) + LISTENER.format(day="Dec 31", clock="23:55:00")
    times, _notes = _read(text)
    assert times == [(1, _at("2024-01-01T06:50:00.5Z")), (2, _at("2024-01-01T06:55:00Z"))]


def test_a_resumed_parser_keeps_the_zone_it_learned() -> None:
    """The checkpoint carries the zone through a restart of healer (through JSON)."""
    head = KATA.format(day="Jul 02", clock="01:00:00", stamp="2023-07-01T23:00:00.1Z").encode()
    first = SourceParser("t", default_year=2023)
    first.feed(head, 0)
    first.close()
    saved = Checkpoint.from_dict(first.checkpoint().to_dict())
    assert saved.zones == {"syslog": 7200.0}
    resumed = SourceParser("t", default_year=2023, resume=saved)
    tail = LISTENER.format(day="Jul 02", clock="01:30:00").encode()
    items = resumed.feed(tail, len(head)) + resumed.close()
    assert [(i.line, i.time) for i in items if isinstance(i, Event)] == [
        (2, _at("2023-07-01T23:30:00Z"))
    ]


@pytest.mark.parametrize("keep_unrecognized", [False, True])
def test_a_replay_dates_the_lines_before_the_first_zoned_one(
    tmp_path: Path, keep_unrecognized: bool
) -> None:
    """Replay reads the source's start for its zone first, on both of its paths."""
    log = tmp_path / "host.log"
    log.write_text(
        "Jul 02 01:21:00 host systemd[1]: Started virtiofsd.\n"
        + LISTENER.format(day="Jul 02", clock="01:22:05")
        + RUST.format(day="Jul 02", clock="01:22:06", stamp="2023-07-01T23:22:06Z")
    )
    items = list(
        replay([Input("host", str(log))], default_year=2024, keep_unrecognized=keep_unrecognized)
    )
    assert [(i.line, i.time) for i in items if isinstance(i, Event)] == [
        (2, _at("2023-07-01T23:22:05Z")),
        (3, _at("2023-07-01T23:22:06Z")),
    ]
    assert [i.line for i in items if isinstance(i, ClockNote)] == [3]
