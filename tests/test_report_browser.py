"""The HTML postmortem in a real browser (Debian's chromium, headless): it renders, each
incident has its SVG timeline with one band per phase change, and nothing is wider
than a 1280 px window. The report itself has no script: the test adds one that
measures the laid-out page and writes the figures into the DOM, which chromium's
``--dump-dom`` returns. Expected band counts come from ``healer replay --format
jsonl`` of the same input (transitions per incident), not from the report."""

from __future__ import annotations

import collections
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import required_program

WIDTH = 1280
MEASURE = """<script>
const r = {
  scroll: document.documentElement.scrollWidth,
  width: window.innerWidth,
  right: Math.max(0, ...[...document.querySelectorAll('table, pre, svg, nav')]
    .map(e => e.getBoundingClientRect().right)),
  svgs: Object.fromEntries([...document.querySelectorAll('svg.timeline')]
    .map(s => [s.getAttribute('aria-label').replace('timeline of incident ', ''),
               s.querySelectorAll('rect.band').length])),
  anchors: [...document.querySelectorAll('nav a')]
    .every(a => document.getElementById(a.getAttribute('href').slice(1)) !== null),
};
const out = document.createElement('pre');
out.id = 'measured';
out.textContent = JSON.stringify(r);
document.body.appendChild(out);
</script>"""


@pytest.fixture
def chromium() -> str:
    return required_program("chromium", "chromium")


def healer(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "healer", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def measured(chromium: str, report: Path) -> dict[str, Any]:
    page = report.with_name("measured.html")
    page.write_text(report.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>"))
    dom = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--window-size={WIDTH},1000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120, check=False,
    ).stdout  # fmt: skip
    found = re.search(r'<pre id="measured">(.*?)</pre>', dom, re.S)
    assert found is not None, dom[-2000:]
    result: dict[str, Any] = json.loads(found.group(1))
    return result


def transitions(jsonl: str) -> dict[str, int]:
    rows = (json.loads(line) for line in jsonl.splitlines())
    return dict(collections.Counter(r["incident"] for r in rows if r["type"] == "transition"))


def check(chromium: str, report: Path, expected: dict[str, int]) -> None:
    seen = measured(chromium, report)
    assert seen["width"] == WIDTH
    assert seen["scroll"] <= WIDTH, seen  # no horizontal scrolling
    assert seen["right"] <= WIDTH, seen  # no table, block or picture past the edge
    assert seen["anchors"] is True  # every contents link has its heading
    assert seen["svgs"] == expected


def test_the_embedded_incidents_report(chromium: str, tmp_path: Path) -> None:
    report = tmp_path / "incident.html"
    healer("replay", "--report", str(report))
    expected = transitions(healer("replay", "--format", "jsonl"))
    assert expected  # the incident changes phase
    check(chromium, report, expected)


def test_the_demos_report(chromium: str, tmp_path: Path) -> None:
    """The demo's journal as recorded: three faults, three incidents."""
    healer("demo", "--keep", str(tmp_path / "demo"))
    journal = tmp_path / "demo" / "journal"
    report = tmp_path / "demo.html"
    healer("replay", "--journal", str(journal), "--report", str(report))
    expected = transitions(healer("replay", "--journal", str(journal), "--format", "jsonl"))
    assert len(expected) >= 3
    check(chromium, report, expected)
