"""Property tests: the parser is total, block-split invariant, and lossless in JSON."""

from __future__ import annotations

import io
import itertools
from datetime import UTC, datetime, timedelta

from conftest import EXCERPTS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from healer.events import Event, event_from_json, event_to_json
from healer.parse import ClockNote, Parsed, Repeat, SourceParser, Unrecognized
from healer.sources import read_batches

REAL_LINES = sorted({line for e in EXCERPTS for line in e.body.split(b"\n")})
NASTY = [
    b"",
    b"\x00" * 17,
    b"\xff\xfe\xfd invalid utf-8 \xc3\x28",
    b"{",
    b"}",
    b"  0: indented chain item",
    b"Debug Info: Foo(Bar(Os { code: 111, kind: ConnectionRefused",
    b"cloud-hypervisor: 1.5s: <vmm> ERROR:x.rs:1 -- Failed connecting the backend (((((",
    b"thread 'x' panicked at src/main.rs:1:1:",
    b"\r",
    b"\t",
    # a line re-wrapped with shell continuations, a keyword cut in two
    b"cloud-hypervisor: 70.5s: ERROR:x.rs:1 -- Failed \\",
    b"connecting the backend after trying for 1 minute: Foo \\",
    b"    Os { code: 111, kind: ConnectionRefused }",
    b"C:\\Users\\",
]
line_strategy = st.one_of(
    st.sampled_from(REAL_LINES),
    st.sampled_from(NASTY),
    st.binary(max_size=200).map(lambda b: b.replace(b"\n", b" ")),
)
logs = st.lists(line_strategy, max_size=60).map(lambda ls: b"".join(x + b"\n" for x in ls))


def _events(items: list[Parsed]) -> list[bytes]:
    return [event_to_json(i) for i in items if isinstance(i, Event)]


def _feed_in_blocks(data: bytes, cuts: list[int], *, every: bool = False) -> list[bytes]:
    """Feed ``data`` split at line boundaries chosen by ``cuts``."""
    parser = SourceParser("prop", default_year=2024, keep_unrecognized=every)
    starts = [0, *[i + 1 for i, b in enumerate(data) if b == 0x0A][:-1]]
    chosen = sorted({starts[c % len(starts)] for c in cuts} | {0}) if starts else [0]
    out: list[Parsed] = []
    for begin, end in zip(chosen, [*chosen[1:], len(data)], strict=True):
        if end > begin:
            out += parser.feed(data[begin:end], begin)
    out += parser.close()
    return _events(out)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(logs, st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
def test_block_boundaries_do_not_change_events(data: bytes, cuts: list[int]) -> None:
    """However a log is cut into blocks, the fast path yields the same events."""
    assert _feed_in_blocks(data, cuts) == _feed_in_blocks(data, [])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(logs, st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
def test_fast_path_equals_line_path(data: bytes, cuts: list[int]) -> None:
    """The prefilter never loses or invents an event the full walk would find."""
    assert _feed_in_blocks(data, cuts) == _feed_in_blocks(data, cuts, every=True)


def _read_from_start(data: bytes, cuts: list[int]) -> list[tuple[str, int, str, str]]:
    """What replay reads of a log from its start (the prescan, then blocks)."""
    parser = SourceParser("prop", default_year=2024)
    out: list[Parsed] = [*parser.learn_clocks(data)]
    starts = [0, *[i + 1 for i, b in enumerate(data) if b == 0x0A][:-1]]
    chosen = sorted({starts[c % len(starts)] for c in cuts} | {0}) if starts else [0]
    for begin, end in zip(chosen, [*chosen[1:], len(data)], strict=True):
        if end > begin:
            out += parser.feed(data[begin:end], begin)
    out += parser.close()
    return [(e.kind, e.line, str(e.time), e.message) for e in out if isinstance(e, Event)]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    logs.filter(lambda d: d.lstrip()[:1] not in (b" ", b"\t") and d.strip()[:1] != b""),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=8),
    st.sampled_from([b"    ", b"\t", b"  "]),
)
def test_a_log_pasted_with_a_margin_reads_the_same(
    data: bytes, cuts: list[int], margin: bytes
) -> None:
    """Indent a whole log (a mail) and the same events come out, on the same lines."""
    lines = data.split(b"\n")[:-1]
    first = next(line for line in lines if line.strip())
    if first[:1] in (b" ", b"\t"):
        return  # a log whose first line is indented has no margin to tell from its own
    indented = b"".join((margin + x if x.strip() else x) + b"\n" for x in lines)
    assert _read_from_start(indented, cuts) == _read_from_start(data, [])


@settings(max_examples=200)
@given(logs)
def test_events_round_trip_through_json(data: bytes) -> None:
    """Every event the parser makes is rebuilt exactly from its JSON."""
    for item in SourceParser("prop", default_year=2024).parse_all(data):
        if isinstance(item, Repeat | ClockNote):
            continue
        assert isinstance(item, Event)
        assert event_from_json(event_to_json(item)) == item


@given(st.binary(max_size=4000))
def test_any_bytes_parse_without_error(data: bytes) -> None:
    """Arbitrary bytes, NULs and broken UTF-8 included, never make a parser raise."""
    for every in (False, True):
        items = SourceParser("bytes", default_year=2024, keep_unrecognized=every).parse_all(data)
        assert all(isinstance(i, Event | Unrecognized | Repeat | ClockNote) for i in items)


def test_one_mebibyte_line_is_parsed_and_bounded() -> None:
    """A 1 MiB line costs no error; the event keeps bounded text."""
    huge = b"[2024-12-23T04:50:24Z ERROR virtiofsd] Waiting for daemon failed: " + b"A(" * 524_288
    (event,) = SourceParser("huge", default_year=2024).parse_all(huge + b"\n")
    assert isinstance(event, Event)
    assert event.kind == "VirtiofsdDaemonFailed"
    assert len(event.raw) <= 4096
    assert len(event.message) <= 2048


@settings(max_examples=200)
@given(
    st.lists(st.binary(max_size=300).map(lambda b: b.replace(b"\n", b"")), max_size=40),
    st.integers(min_value=1, max_value=700),
    st.integers(min_value=1, max_value=200),
    st.booleans(),
)
def test_reader_offsets_are_exact(
    lines: list[bytes], chunk: int, limit: int, final_newline: bool
) -> None:
    """Each block line sits at its offset in the file, cut to the line limit."""
    data = b"\n".join(lines) + (b"\n" if final_newline and lines else b"")
    seen: list[bytes] = []
    for block, offset in read_batches(io.BytesIO(data), chunk_size=chunk, max_line_bytes=limit):
        assert block.endswith(b"\n")
        at = offset
        for line in block[:-1].split(b"\n"):
            original = data[at:].split(b"\n", 1)[0]
            assert line == original[:limit]
            seen.append(line)
            at += len(original) + 1
    expected = data.split(b"\n")
    if expected and expected[-1] == b"":
        expected.pop()
    assert seen == [x[:limit] for x in expected]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(logs, st.integers(min_value=0, max_value=10_000))
def test_resuming_from_a_checkpoint_loses_and_repeats_nothing(data: bytes, cut: int) -> None:
    """Stop after any line, resume a new parser at its checkpoint: same events."""
    # read as live reads, without replay's prescan (which dates early records by what
    # later ones say: tests/test_zone.py)
    reader = SourceParser("prop", default_year=2024)
    whole = _events(reader.feed(data, 0) + reader.close()) if data else []
    starts = [0, *[i + 1 for i, b in enumerate(data) if b == 0x0A]]
    split = starts[cut % len(starts)]
    first = SourceParser("prop", default_year=2024)
    before = first.feed(data[:split], 0) if split else []
    point = first.checkpoint()
    assert point.offset <= split
    second = SourceParser("prop", default_year=2024, resume=point)
    rest = data[point.offset :]
    after = (second.feed(rest, point.offset) if rest else []) + second.close()
    assert _events(before) + _events(after) == whole


LIVE_T0 = datetime(2024, 12, 23, 7, 44, 50, tzinfo=UTC)


def _feed_live(data: bytes, cuts: list[int], *, every: bool = False) -> list[Event]:
    """Feed ``data`` in blocks as ``_feed_in_blocks`` does, each read a second later."""
    parser = SourceParser("prop", default_year=2024, keep_unrecognized=every)
    starts = [0, *[i + 1 for i, b in enumerate(data) if b == 0x0A][:-1]]
    chosen = sorted({starts[c % len(starts)] for c in cuts} | {0}) if starts else [0]
    out: list[Parsed] = []
    for n, (begin, end) in enumerate(zip(chosen, [*chosen[1:], len(data)], strict=True)):
        if end > begin:
            out += parser.feed(data[begin:end], begin, ingest=LIVE_T0 + timedelta(seconds=n))
    out += parser.close(ingest=LIVE_T0 + timedelta(seconds=len(chosen)))
    return [i for i in out if isinstance(i, Event)]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(logs, st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
def test_a_live_record_always_has_a_time(data: bytes, cuts: list[int]) -> None:
    """Whatever the lines carry (or lack), a record read live is never undated."""
    assert all(e.time is not None for e in _feed_live(data, cuts))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(logs, st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))
def test_fast_path_equals_line_path_live(data: bytes, cuts: list[int]) -> None:
    """Both paths date each record by the read time of the block its head came in."""
    fast = [event_to_json(e) for e in _feed_live(data, cuts)]
    assert fast == [event_to_json(e) for e in _feed_live(data, cuts, every=True)]


def _ch_line(uptime_us: int) -> bytes:
    return (
        f"cloud-hypervisor: {uptime_us / 1e6:10.6f}s: <vmm> INFO:"
        "virtio-devices/src/vhost_user/mod.rs:393 -- vhost-user backend for socket"
        " /run/fs.sock disconnected, attempting reconnection\n"
    ).encode()


@settings(max_examples=200)
@given(
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=0, max_value=10**8),
    st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 10**7)), min_size=1, max_size=30),
)
def test_live_uptime_only_lines_are_dated_between_truth_and_read(
    boot_us: int, first_up_us: int, steps: list[tuple[int, int]]
) -> None:
    """cloud-hypervisor lines with only an uptime, each read after a random delay:
    every time lies between when the line was written and when it was read, within
    the smallest read delay so far of the truth (whole microseconds: exact)."""
    boot = LIVE_T0 + timedelta(microseconds=boot_us)
    parser = SourceParser("ch", default_year=2024)
    uptime_us, read, offset = first_up_us, boot, 0
    written: list[datetime] = []
    reads: list[datetime] = []
    out: list[Parsed] = []
    for gap_us, delay_us in steps:
        uptime_us += gap_us
        written.append(boot + timedelta(microseconds=uptime_us))
        read = max(read, written[-1] + timedelta(microseconds=delay_us))  # read in order
        reads.append(read)
        line = _ch_line(uptime_us)
        out += parser.feed(line, offset, ingest=read)
        offset += len(line)
    out += parser.close()
    times = [i.time for i in out if isinstance(i, Event)]
    assert len(times) == len(steps)
    smallest = reads[0] - written[0]
    for time, wrote, got in zip(times, written, reads, strict=True):
        smallest = min(smallest, got - wrote)
        assert time is not None
        assert wrote <= time <= got
        assert time - wrote == smallest


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["", "\r", "x", "virtiofsd", " "]), max_size=40), st.data())
def test_blank_lines_are_counted_one_each_however_they_run_and_are_split(
    lines: list[str], data: st.DataObject
) -> None:
    """A run of empty lines counts every line in it, whatever the block boundaries."""
    text = "".join(line + "\n" for line in lines).encode()
    expected = sum(1 for line in lines if line in ("", "\r"))  # written by hand: CR is empty
    cuts = sorted(data.draw(st.sets(st.integers(0, len(lines)), max_size=4)))
    starts = [0, *[sum(len(line) + 1 for line in lines[:cut]) for cut in cuts], len(text)]
    parser = SourceParser("x.log", default_year=2026)
    for start, end in itertools.pairwise(starts):
        parser.feed(text[start:end], start)
    parser.close()
    assert parser.stats.blank_lines == expected
    assert parser.stats.lines == len(lines)
