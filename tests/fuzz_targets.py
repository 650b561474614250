"""Coverage-guided fuzzing of the entry points that read untrusted bytes: a slow job.

    scripts/fuzz [SECONDS_PER_TARGET]

Not part of the test command (``tests/test_fuzz_targets.py`` runs every target on its
seeds there, so the targets keep working). Each target takes bytes and either returns
or raises the error healer reports with a location; anything else is a crash, which
atheris saves under ``.cache/fuzz/`` as the input that caused it.

- ``logs``: a tailed log read by the parsers, replayed (``parse_all``) or live (fed in
  two blocks with read times, then closed), as a host or a guest-controlled source.
- ``journal``: a journal segment read back (``JournalCorrupt`` is the located error).
- ``config``: a ``healer.toml`` (``ConfigError``).
- ``rules``: a rule file (``RulesError``).
- ``vm_info``: the VMM's answer to ``vm.info`` (``ChError``).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from healer.config import ConfigError, load_config
from healer.engine.rules import RulesError
from healer.journal.store import JournalCorrupt, read_segment
from healer.parse import SourceParser
from healer.rulefiles import load_rules
from healer.vmm.ch_api import answer_json, checked_info
from healer.vmm.errors import ChError

__all__ = ["TARGETS", "main"]

_SCRATCH = Path(tempfile.mkdtemp(prefix="healer-fuzz-"))
_T0 = datetime(2024, 12, 23, 7, 44, 50, tzinfo=UTC)


def logs(data: bytes) -> None:
    """Bit 0 of the first byte: a guest-controlled source; bit 1: read live."""
    mode, body = (data[0], data[1:]) if data else (0, b"")
    parser = SourceParser("fuzz", default_year=2024, guest=bool(mode & 1))
    if not mode & 2:
        parser.parse_all(body)
        return
    whole = body[: body.rfind(b"\n") + 1]  # feed takes whole lines, as a tailer gives
    half = whole.find(b"\n", len(whole) // 2) + 1
    parser.feed(whole[:half], 0, ingest=_T0)
    parser.feed(whole[half:], half, ingest=_T0 + timedelta(seconds=1))
    parser.close(ingest=_T0 + timedelta(seconds=2))


def journal(data: bytes) -> None:
    segment = _SCRATCH / "segment-00000001.jsonl"
    segment.write_bytes(data)
    with contextlib.suppress(JournalCorrupt):
        read_segment(segment, last=True)


def config(data: bytes) -> None:
    path = _SCRATCH / "healer.toml"
    path.write_bytes(data)
    with contextlib.suppress(ConfigError):
        load_config(path)


def rules(data: bytes) -> None:
    path = _SCRATCH / "fuzz.toml"
    path.write_bytes(data)
    with contextlib.suppress(RulesError):
        load_rules(path)


def vm_info(data: bytes) -> None:
    with contextlib.suppress(ChError):
        checked_info(answer_json(200, data, "vm.info"))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "logs": logs,
    "journal": journal,
    "config": config,
    "rules": rules,
    "vm_info": vm_info,
}


def main(argv: list[str]) -> int:
    """``fuzz_targets.py TARGET [libFuzzer flags and corpus dirs]``."""
    if len(argv) < 2 or argv[1] not in TARGETS:
        print(f"usage: {argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options]", file=sys.stderr)
        return 2
    atheris = importlib.import_module("atheris")  # installed by scripts/fuzz only
    atheris.instrument_all()
    atheris.Setup([argv[0], *argv[2:]], TARGETS[argv[1]])
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
