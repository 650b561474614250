"""The README's first command installs healer with ``pip install .`` (not editable): the
wheel must carry every module of the source tree, the shipped rules and the examples.
A package left out of the build configuration would install a healer that fails at its
first import of it (``healer watch`` starting its holder, say)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_holds_every_module_the_rules_and_the_examples(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("healer-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "healer").rglob("*.py")
        if "__pycache__" not in path.parts
    }
    assert sources, "no sources found"
    assert sources - names == set()
    assert {"healer/py.typed", "healer/examples/incident-docker.log"} <= names
    rules = {p.name for p in (ROOT / "rules").glob("*.toml")}
    shipped = {Path(n).name for n in names if "/share/healer/rules/" in n}
    assert rules
    assert shipped == rules
