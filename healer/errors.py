"""The error hierarchy: each error carries the offending values and says how to fix it."""

from __future__ import annotations

__all__ = ["HealerError", "InputError"]


class HealerError(Exception):
    """Base of every error healer raises on purpose."""


class InputError(HealerError):
    """An input file cannot be used: missing, unreadable or not a log.

    ``path`` is the file as the user named it; ``hint`` is the next step.
    """

    def __init__(self, path: str, problem: str, hint: str) -> None:
        self.path = path
        self.problem = problem
        self.hint = hint
        super().__init__(f"{path}: {problem} ({hint})")
