"""The healing engine: rules as data and a pure decision core."""

from healer.engine.core import (
    Decision,
    Engine,
    EngineState,
    Phase,
    Tick,
    Transition,
    output_from_dict,
    output_to_dict,
)
from healer.engine.rules import Policy, Rule, RulesError, RuleSet, load_rules

__all__ = [
    "Decision",
    "Engine",
    "EngineState",
    "Phase",
    "Policy",
    "Rule",
    "RuleSet",
    "RulesError",
    "Tick",
    "Transition",
    "load_rules",
    "output_from_dict",
    "output_to_dict",
]
