"""The healing engine: rules as data and a pure decision core.

Nothing here reads a file. ``load_rules`` (which does) lives in :mod:`healer.rulefiles`;
``from healer.engine import load_rules`` still works, imported only when asked for,
for the callers that have always spelt it so.
"""

from typing import TYPE_CHECKING

from healer.engine.core import Engine, backoff_delay
from healer.engine.model import (
    DEFAULT_SHARE,
    FINAL,
    HEALING,
    Action,
    Cause,
    Decision,
    EngineState,
    Output,
    Phase,
    ShareState,
    Status,
    Tick,
    Transition,
)
from healer.engine.rules import Policy, Rule, RulesError, RuleSet
from healer.engine.ruletext import compile_rules

if TYPE_CHECKING:
    from healer.rulefiles import load_rules

__all__ = [
    "DEFAULT_SHARE",
    "FINAL",
    "HEALING",
    "Action",
    "Cause",
    "Decision",
    "Engine",
    "EngineState",
    "Output",
    "Phase",
    "Policy",
    "Rule",
    "RuleSet",
    "RulesError",
    "ShareState",
    "Status",
    "Tick",
    "Transition",
    "backoff_delay",
    "compile_rules",
    "load_rules",
]


def __getattr__(name: str) -> object:
    """``load_rules`` reads files: imported from :mod:`healer.rulefiles` on first use."""
    if name == "load_rules":
        from healer.rulefiles import load_rules  # noqa: PLC0415 - the edge, only when asked

        return load_rules
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
