"""Rule files on disk: where the shipped rules are, and reading a rules directory.

The engine only ever sees text (:func:`healer.engine.ruletext.compile_rules`); this
is the edge that reads the files. The digest is taken over the bytes as read, so a
journal's recorded digest names exactly the files a run used.
"""

from __future__ import annotations

import sys
from pathlib import Path

from healer.engine.rules import RulesError, RuleSet
from healer.engine.ruletext import compile_rules, rules_digest
from healer.tomlspot import Problem

__all__ = ["default_rules_dir", "load_rules", "read_rule_files"]


def default_rules_dir() -> Path:
    """The shipped rules: ``rules/`` of a source checkout, else the installed copy."""
    checkout = Path(__file__).resolve().parents[1] / "rules"
    if any(checkout.glob("*.toml")):
        return checkout
    return Path(sys.prefix) / "share" / "healer" / "rules"


def read_rule_files(path: Path | str) -> list[tuple[str, bytes]]:
    """``(file name, bytes)`` of a directory's ``*.toml`` files (sorted), or of one file."""
    root = Path(path)
    if root.is_dir():
        files = sorted(root.glob("*.toml"))
    elif root.exists():
        files = [root]
    else:
        raise RulesError([Problem(str(root), 0, "no such file or directory", "name a rules dir")])
    if not files:
        raise RulesError([Problem(str(root), 0, "no *.toml rule files", "add rule files")])
    read: list[tuple[str, bytes]] = []
    for file in files:
        try:
            read.append((str(file), file.read_bytes()))
        except OSError as exc:
            problem = f"cannot be read: {exc.strerror or exc}"
            raise RulesError([Problem(str(file), 0, problem, "check its permissions")]) from exc
    return read


def load_rules(path: Path | str) -> RuleSet:
    """Load a directory of ``*.toml`` rule files (or one file); raise RulesError."""
    files = read_rule_files(path)
    texts = [(name, data.decode("utf-8", "replace")) for name, data in files]
    return compile_rules(texts, digest=rules_digest(files))
