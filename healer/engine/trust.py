"""What a line may ask for, by who could have written it (docs/trust.md).

The guest writes its console, and its console often sits inside the VMM's log or in
a Kata ``vmconsole`` record. Anything the guest can print it can forge, so a line the
guest wrote (``Cause.guest``) asks the host for nothing by itself:

- a respawn becomes an *ensure* (a virtiofsd is started only when none runs: the
  host's own check decides) and a re-add runs only when the host sees the device
  unserved (the VMM does not list it, or no client is connected to its socket);
- a VM restart or a circuit opening is suppressed;
- a remount in the guest and an alert run as asked (the guest can only hurt itself);
- nothing of it opens an incident or moves a share's phase.

And any one tailed log decides at most ``source_decisions`` actions per
``source_window`` seconds; beyond, decisions are suppressed (and counted). healer's
own observations (its daemons' exits and stderr, which carry a daemon generation)
are never limited: the circuit breaker already bounds them.
"""

from __future__ import annotations

from healer.engine.model import Action, Cause
from healer.engine.rules import Policy

__all__ = [
    "GUEST_KINDS",
    "RATE_LIMITED",
    "as_guest_asks",
    "decided_at",
    "guest_refusal",
    "over_rate",
]

GUEST_KINDS = frozenset({"GuestTagNotFound", "GuestMountFailed", "GuestReboot"})
"""Kinds only the guest's kernel or tools write, wherever the line was read."""

RATE_LIMITED = "rate limit of source"
"""How a suppression by the per-source limit begins (metrics count these)."""

_CHECKED_FIRST = {
    Action.RESPAWN: (Action.ENSURE, "written by the guest: started only if none runs"),
    Action.ENSURE: (Action.ENSURE, "written by the guest: started only if none runs"),
    Action.READD: (
        Action.READD,
        "written by the guest: re-added only if the host sees it unserved",
    ),
}


def as_guest_asks(action: Action) -> tuple[Action, str | None]:
    """The form of ``action`` a guest-written line gets, with the note that says so."""
    return _CHECKED_FIRST.get(action, (action, None))


def guest_refusal(action: Action) -> str | None:
    """Why a guest-written line cannot have ``action`` at all (None: it can)."""
    if action in (Action.RESTART_VM, Action.OPEN_CIRCUIT):
        return f"written by the guest: {action.value} needs the host's own evidence"
    return None


def limited(cause: Cause | None) -> bool:
    """Whether the per-source limit applies: a tailed log, not healer's own eyes."""
    return cause is not None and cause.generation is None and not cause.source.startswith("healer")


def over_rate(
    rates: dict[str, tuple[float, ...]], policy: Policy, cause: Cause | None, when: float
) -> str | None:
    """The suppression reason when the cause's source has used up its decisions."""
    if not limited(cause) or cause is None:
        return None
    recent = _recent(rates.get(cause.source, ()), policy, when)
    if len(recent) < policy.source_decisions:
        return None
    return (
        f"{RATE_LIMITED} {cause.source}: {policy.source_decisions} decisions "
        f"in {policy.source_window_s:g} s"
    )


def decided_at(
    rates: dict[str, tuple[float, ...]], policy: Policy, cause: Cause | None, when: float
) -> dict[str, tuple[float, ...]]:
    """``rates`` with one more decision of the cause's source (unchanged if unlimited)."""
    if not limited(cause) or cause is None:
        return rates
    recent = _recent(rates.get(cause.source, ()), policy, when)
    return {**rates, cause.source: (*recent, when)}


def _recent(times: tuple[float, ...], policy: Policy, when: float) -> tuple[float, ...]:
    return tuple(t for t in times if when - t < policy.source_window_s)
