"""The front door: the README stays short and every link in it and in docs/ leads to
a file (and heading) of this repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def slug(heading: str) -> str:
    """A heading's anchor as GitHub makes it: lower case, punctuation dropped, spaces
    to hyphens."""
    text = heading.strip().lower().replace("`", "")
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"(?m)^#+ (.+)$", text)}


def test_the_readme_is_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) < 150
    assert lines[0] == "# healer"
    assert any("pip install" in line and "healer demo" in line for line in lines)
    assert "./scripts/test" in lines


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_leads_into_the_repository(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    for target in _LINK.findall(text):
        assert not target.startswith(("http:", "https:")), f"{page.name}: {target} leaves"
        path, _, anchor = target.partition("#")
        found = (page.parent / path).resolve() if path else page
        assert found.exists(), f"{page.name}: {target} does not exist"
        assert ROOT in found.parents or found == ROOT, f"{page.name}: {target} is outside"
        if anchor and found.suffix == ".md":
            assert anchor in anchors(found), f"{page.name}: no heading #{anchor} in {path}"
