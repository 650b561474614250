"""The ``healer`` command line, run as a user would: a real process, real files."""

from __future__ import annotations

import gzip
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from conftest import CORPUS

from healer.cli import EXIT_INPUT, EXIT_OK, EXIT_USAGE
from healer.events import KINDS


def healer(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "healer", *args],
        input=stdin,
        capture_output=True,
        check=False,
        timeout=120,
    )


def jsonl(output: bytes) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in output.splitlines()]


def test_replay_without_files_runs_the_embedded_incident() -> None:
    """The README's offline example (`healer replay`): the user's real incident, with the shipped rules."""
    result = healer("replay", "--format", "jsonl")
    assert result.returncode == EXIT_OK
    assert b"embedded example incident" in result.stderr
    items = jsonl(result.stdout)
    events = [e for e in items if e["type"] == "event"]
    assert [e["kind"] for e in events] == [
        "VmRebootFailed",
        "ApiUnreachable",
        "BackendConnectTimeout",
        "ApiUnreachable",
    ]
    timeout = events[2]
    assert timeout["fields"] == {
        "chain": ["VhostUserProtocol", "SocketConnect"],
        "error_kind": "ConnectionRefused",
        "errno": 111,
        "socket": None,
    }
    heal = [d for d in items if d.get("type") == "decision" and d["rule"] != "api-unreachable"]
    assert [(d["action"], d["key"], d["would_run"]) for d in heal] == [
        ("notify", "default#1/notify/1", True),
        ("ensure_virtiofsd", "default#1/ensure_virtiofsd/1", True),
        ("readd_fs", "default#1/readd_fs/1", True),
        ("remount_guest", "default#1/remount_guest/1", True),
    ]
    assert heal[2]["after"] == heal[1]["key"]
    assert heal[3]["after"] == heal[2]["key"]


def test_jsonl_has_the_documented_keys() -> None:
    result = healer(
        "replay", "--no-rules", "--format", "jsonl", str(CORPUS / "virtiofsd-rust-real.log")
    )
    keys = {"type", "kind", "time", "source", "offset", "line", "share", "level", "fields", "raw"}
    events = jsonl(result.stdout)
    assert events
    assert all(keys <= set(e) for e in events)
    assert {e["type"] for e in events} == {"event"}


def test_every_jsonl_record_has_a_type_and_iso_times() -> None:
    """Events, decisions and phase changes alike: ``"type"`` first, times as ISO 8601 UTC.

    The expected times are the embedded incident's own (its line 5 and line 11)."""
    items = jsonl(healer("replay", "--format", "jsonl").stdout)
    assert {i["type"] for i in items} == {"clock", "event", "decision", "transition"}
    assert all(next(iter(i)) == "type" for i in items)
    assert items[0] == {
        "type": "clock",
        "source": "incident-docker.log",
        "line": 11,
        "wrapper": "ch",
        "what": "dump",
        "zone": None,
        "apart": 0.0,
        "text": "wrapper timestamps are a batch dump; times from cloud-hypervisor's uptime,"
        " anchored at line 11 (70.509 s = 2022-12-26T06:48:09.082Z)",
    }
    first_event, first_phase, first_decision = items[1], items[2], items[3]
    assert (first_event["type"], first_event["time"]) == ("event", "2022-12-26T06:48:09.043679Z")
    assert first_phase == {
        "type": "transition",
        "time": "2022-12-26T06:48:09.043679Z",
        "share": "default",
        "incident": "default#1",
        "before": "healthy",
        "after": "failing",
        "reason": "vmm-exited-on-reboot",
        "cause": {
            "kind": "VmRebootFailed",
            "source": "incident-docker.log",
            "line": 5,
            "offset": 312,
            "time": "2022-12-26T06:48:09.043679Z",
            "pid": None,
            "generation": None,
            "guest": False,
        },
    }
    assert first_decision["type"] == "decision"
    assert first_decision["time"] == first_decision["not_before"] == first_event["time"]
    readd = next(i for i in items if i.get("action") == "readd_fs")
    assert readd["time"] == "2022-12-26T06:48:09.082698Z"
    cause = readd["cause"]
    assert isinstance(cause, dict)
    assert (cause["time"], cause["line"]) == (readd["time"], 11)


def test_unrecognised_and_outcome_records_have_a_type(tmp_path: Path) -> None:
    path = str(CORPUS / "virtiofsd-c-real.log")
    every = jsonl(healer("replay", "--no-rules", "--format", "jsonl", "--all", path).stdout)
    assert {e["type"] for e in every} == {"event", "unrecognized"}
    assert all(e["kind"] is None for e in every if e["type"] == "unrecognized")
    journal = tmp_path / "j"
    assert healer("replay", "--write-journal", str(journal)).returncode == EXIT_OK
    recorded = jsonl(healer("replay", "--journal", str(journal), "--format", "jsonl").stdout)
    assert {i["type"] for i in recorded} >= {"event", "decision", "transition"}


def test_replay_is_byte_for_byte_deterministic(tmp_path: Path) -> None:
    """Events, decisions and reports: the same input gives the same bytes."""
    files = [str(p) for p in sorted(CORPUS.glob("*.log"))]
    outputs = []
    for n in (1, 2):
        report = tmp_path / f"report{n}.html"
        run = healer(
            "replay", "--format", "jsonl", "--year", "2024", "--report", str(report), *files
        )
        assert run.returncode == EXIT_OK, run.stderr
        outputs.append((run.stdout, report.read_bytes()))
    assert outputs[0] == outputs[1]
    assert len(outputs[0][0]) > 10_000
    assert b'"type":"decision"' in outputs[0][0]


def test_gzip_and_stdin_give_the_same_events(tmp_path: Path) -> None:
    """A .gz file and standard input read like the plain file (source name aside)."""
    plain = CORPUS / "guest-dmesg-real.log"
    packed = tmp_path / "guest.log.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))

    def kinds_and_lines(out: bytes) -> list[tuple[object, object, object]]:
        return [(e["kind"], e["line"], e["offset"]) for e in jsonl(out)]

    expected = kinds_and_lines(
        healer("replay", "--no-rules", "--format", "jsonl", str(plain)).stdout
    )
    assert expected
    assert (
        kinds_and_lines(healer("replay", "--no-rules", "--format", "jsonl", str(packed)).stdout)
        == expected
    )
    piped = healer("replay", "--no-rules", "--format", "jsonl", "-", stdin=plain.read_bytes())
    assert kinds_and_lines(piped.stdout) == expected
    assert {e["source"] for e in jsonl(piped.stdout)} == {"stdin"}


def test_merge_orders_sources_by_event_time(tmp_path: Path) -> None:
    early = tmp_path / "a.log"
    late = tmp_path / "b.log"
    late.write_text("[2024-01-01T00:00:09Z INFO  virtiofsd] Client connected, servicing requests\n")
    early.write_text(
        "[2024-01-01T00:00:01Z INFO  virtiofsd] Waiting for vhost-user socket connection...\n"
        "[2024-01-01T00:00:20Z INFO  virtiofsd] Client disconnected, shutting down\n"
    )
    events = jsonl(
        healer("replay", "--no-rules", "--format", "jsonl", str(early), str(late)).stdout
    )
    assert [e["kind"] for e in events] == [
        "VirtiofsdListening",
        "VirtiofsdClientConnected",
        "VirtiofsdClientDisconnected",
    ]
    unmerged = jsonl(
        healer(
            "replay", "--no-rules", "--format", "jsonl", "--no-merge", str(early), str(late)
        ).stdout
    )
    assert [e["source"] for e in unmerged] == [str(early), str(early), str(late)]


def test_all_shows_unrecognised_records() -> None:
    path = str(CORPUS / "virtiofsd-c-real.log")
    plain = jsonl(healer("replay", "--no-rules", "--format", "jsonl", path).stdout)
    every = jsonl(healer("replay", "--no-rules", "--format", "jsonl", "--all", path).stdout)
    unknown = [e for e in every if e["kind"] is None]
    assert unknown
    assert [e for e in every if e["kind"] is not None] == plain
    assert all(isinstance(e["raw"], str) and e["line"] for e in unknown)


def test_counts_document() -> None:
    result = healer("replay", "--format", "counts", str(CORPUS / "virtiofsd-rust-real.log"))
    counts = orjson.loads(result.stdout)
    assert counts["lines"] == 44
    assert counts["events"] == sum(counts["kinds"].values()) == 13
    assert counts["kinds"]["VirtiofsdDaemonFailed"] == 4
    assert counts["unparsed"] == counts["lines"] - 13 - 7  # 7 empty lines


def test_table_is_readable() -> None:
    result = healer("replay", str(CORPUS / "virtiofsd-rust-real.log"))
    lines = result.stdout.decode().splitlines()
    assert lines[0].split() == ["TIME", "SOURCE:LINE", "LEVEL", "KIND", "DETAILS"]
    assert any("VirtiofsdDaemonFailed" in row and "error_kind=NotSeekable" in row for row in lines)


@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda d: d / "missing.log", b"no such file"),
        (lambda d: d, b"is a directory"),
        (lambda d: _write(d / "core", b"\x7fELF" + b"\x00" * 4000), b"not a log"),
        (lambda d: _write(d / "cut.gz", gzip.compress(b"x" * 100_000)[:50]), b"unreadable"),
        (lambda d: Path("/proc/self/mem"), b"unreadable"),  # opens, then EIO on read
    ],
)
def test_unusable_inputs_fail_with_a_hint(
    tmp_path: Path, make: Callable[[Path], Path], problem: bytes
) -> None:
    """Exit 3, the file named, what is wrong, and what to do; no traceback."""
    path = make(tmp_path)
    result = healer("replay", str(path))
    assert result.returncode == EXIT_INPUT
    assert problem in result.stderr
    assert b"hint:" in result.stderr
    assert b"Traceback" not in result.stderr


def test_usage_errors_exit_2() -> None:
    assert healer("replay", "--format", "xml").returncode == EXIT_USAGE
    assert healer().returncode == EXIT_USAGE
    assert healer("replay", "--what-if", "rules").returncode == EXIT_USAGE  # needs --report


def test_kinds_lists_every_kind() -> None:
    out = healer("kinds").stdout.decode().splitlines()
    assert [line.split()[0] for line in out] == list(KINDS)


def test_long_lines_are_cut_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "long.log"
    path.write_bytes(
        b"x" * 5000
        + b"\n[2024-01-01T00:00:01Z INFO  virtiofsd] Client connected, servicing requests\n"
    )
    counts = orjson.loads(
        healer("replay", "--format", "counts", "--max-line-bytes", "1000", str(path)).stdout
    )
    assert counts["truncated_lines"] == 1
    assert counts["kinds"] == {"VirtiofsdClientConnected": 1}
    (event,) = jsonl(
        healer(
            "replay", "--no-rules", "--format", "jsonl", "--max-line-bytes", "1000", str(path)
        ).stdout
    )
    assert event["offset"] == 5001
    assert event["line"] == 2


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_a_replay_journal_goes_to_a_new_directory(tmp_path: Path) -> None:
    first = healer("replay", "--write-journal", str(tmp_path / "j"))
    assert first.returncode == EXIT_OK
    assert list((tmp_path / "j").glob("segment-*"))
    again = healer("replay", "--write-journal", str(tmp_path / "j"))
    assert again.returncode == EXIT_INPUT
    assert b"already holds a journal" in again.stderr
