"""The healing engine: rules as data and a pure decision core.

Nothing here reads a file: ``load_rules`` (which does) lives in :mod:`healer.rulefiles`.
"""

from healer.engine.core import Engine, backoff_delay
from healer.engine.model import (
    DEFAULT_SHARE,
    FINAL,
    HEALING,
    Action,
    Cause,
    Command,
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

__all__ = [
    "DEFAULT_SHARE",
    "FINAL",
    "HEALING",
    "Action",
    "Cause",
    "Command",
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
]
