"""The fuzz targets of the slow job (tests/fuzz_targets.py) on their seeds and on
inputs each must refuse with its located error: they stay runnable, and a seed that
raises anything else fails here as it would under atheris."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from conftest import CORPUS
from fuzz_targets import TARGETS

ROOT = Path(__file__).resolve().parent.parent
INFO = {
    "config": {
        "fs": [{"tag": "fs0", "socket": "/run/fs0.sock", "num_queues": 1, "id": "_fs0"}],
        "memory": {"size": 536870912, "shared": True},
    },
    "state": "Running",
    "device_tree": {"_fs0": {"id": "_fs0", "children": [], "pci_bdf": None}},
}
SEGMENT = (
    b'{"seq":1,"type":"start","at":1733000000.0,"pid":7,"rules":"abc","version":"0"}\n'
    b'{"seq":2,"type":"offset","source":"vm","offset":10'
)


def _readme_config() -> bytes:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- config-example -->\n```toml\n(.*?)```", text, re.S)
    assert found is not None, "docs/configuration.md has no config-example block"
    return found.group(1).encode()


def _seeds() -> list[tuple[str, bytes]]:
    logs = [p.read_bytes()[:65536] for p in sorted(CORPUS.glob("*.log"))]
    assert logs, "the corpus has no logs"
    return [
        *(("logs", bytes([mode]) + text) for text in logs for mode in range(4)),
        ("logs", b"\x02" + b"[" * 10000 + b"\n" + b'{"a":' * 2000 + b"\n"),
        ("journal", SEGMENT),
        ("journal", b'{"seq":"x"}\n{"seq":2,"type":"nonsense"}\n'),
        ("journal", b"\xff\xfe\n"),
        ("config", _readme_config()),
        ("config", b"[healer]\njournal = 3\n[[share]]\nname = []\n"),
        ("config", b"\x00[[[\n"),
        ("rules", (ROOT / "rules" / "healing.toml").read_bytes()),
        ("rules", b"[[rule]]\nname = 1\nwhen = {}\n"),
        ("rules", b"\xc3\x28 = 1\n"),
        ("vm_info", orjson.dumps(INFO)),
        ("vm_info", b'{"config": []}'),
        ("vm_info", b'{"config": {"fs": [{"tag": 5}]}}'),
        ("vm_info", b"[1, 2]"),
        ("vm_info", b"\xff"),
    ]


@pytest.mark.parametrize(
    ("target", "data"), _seeds(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_a_target_returns_on_its_seed(target: str, data: bytes) -> None:
    TARGETS[target](data)


def test_every_target_has_seeds() -> None:
    assert {target for target, _ in _seeds()} == set(TARGETS)
