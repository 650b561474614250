"""The helpers that change rules for tests (tests/rulepatch.py) fail when they miss."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from rulepatch import edit, patch_text, rules_toml, shipped_rules, without, write_rules

from healer.rulefiles import load_rules


def test_the_shipped_rules_round_trip_through_the_writer(tmp_path: Path) -> None:
    """Every key the shipped rules use is written, so each test's rules are the
    shipped ones except for what it changed."""
    rules = shipped_rules()
    assert len(rules.rules) >= 10
    assert any(rule.where for rule in rules.rules)  # predicates are written too
    assert {rule.correlate for rule in rules.rules} == {"single", "threshold", "pair", "cooldown"}
    loaded = load_rules(write_rules(rules, tmp_path / "rules"))
    assert [replace(r, file="", line=0) for r in loaded.rules] == [
        replace(r, file="", line=0) for r in rules.rules
    ]
    assert loaded.policy == rules.policy


def test_a_change_shows_in_the_rules_loaded(tmp_path: Path) -> None:
    rules = shipped_rules()
    rules = replace(rules, policy=replace(rules.policy, backoff_initial_s=0.1))
    rules = edit(rules, lambda r: r.correlate == "threshold", lambda r: replace(r, count=1000))
    rules = without(rules, "daemon-storm")
    loaded = load_rules(write_rules(rules, tmp_path))
    assert loaded.policy.backoff_initial_s == 0.1
    thresholds = [r for r in loaded.rules if r.correlate == "threshold"]
    assert [r.id for r in thresholds] == ["restart-storm"]
    assert thresholds[0].count == 1000
    assert "daemon-storm" not in rules_toml(rules)


def test_a_rule_that_is_not_there_is_an_error() -> None:
    rules = shipped_rules()
    with pytest.raises(LookupError, match="restart-strom"):
        without(rules, "restart-strom")
    with pytest.raises(LookupError):
        edit(rules, lambda r: r.correlate == "never", lambda r: r)


def test_rules_the_toml_cannot_say_are_an_error(tmp_path: Path) -> None:
    """A count on a single rule is not written (healer would refuse it): the read-back
    differs, and the writer says so instead of handing over other rules."""
    rules = edit(shipped_rules(), "respawn-on-exit", lambda r: replace(r, count=3))
    with pytest.raises(AssertionError, match="does not load back"):
        write_rules(rules, tmp_path)


def test_a_text_patch_must_match_exactly_as_often_as_expected() -> None:
    text = "count = 5\nwindow = 60.0\ncount = 5\n"
    assert (
        patch_text(text, "window = 60.0", "window = 1.0") == "count = 5\nwindow = 1.0\ncount = 5\n"
    )
    assert patch_text(text, "count = 5", "count = 9", count=2).count("count = 9") == 2
    with pytest.raises(ValueError, match="found 1"):
        patch_text(text, "window = 60", "window = 1", count=2)
    with pytest.raises(ValueError, match="occurrence"):
        patch_text(text, "", "x")
    with pytest.raises(ValueError, match="found 2"):
        patch_text(text, "count = 5", "count = 9")
    with pytest.raises(ValueError, match="found 0"):
        patch_text(text, "backoff_initial = 1.0", "backoff_initial = 0.1")
