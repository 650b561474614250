"""Which virtiofsd a report speaks for: one death, one healing, whoever reports it.

One death of a daemon is reported several times: its own "client disconnected" line,
its exit (seen by healer), the VMM's "backend disconnected", a journald copy of any
of these. Live, healer numbers the daemons it runs (``origin.generation``; a pid can
be reused, a generation never is) and says when each started (``VirtiofsdStarted``),
so a report is tied to one daemon instance:

- a report that carries a generation is about that daemon;
- one that carries none (the VMM's) is about the daemon that was serving the VMM when
  it was written, or about an older one if it was written before the current daemon
  started; when healer cannot tell, it leaves the decision to the daemon's own exit,
  which healer always sees;
- the first report of a daemon's death decides; later ones repeat it; a report about
  a daemon older than the current one decides nothing (a newer one already runs).

A daemon that exits cleanly (status 0: its client left) within ``stale_session``
seconds of its client connecting served a dead connection (a connect-and-close probe,
a VMM that died while it waited in the socket's backlog): it is respawned at once,
without backoff and without counting towards a restart storm, and its connect was
never a recovery. Other reports of a death in that window (its "client disconnected"
line, the VMM's) wait for the exit to say which it was; a daemon killed or failing
in that window is an ordinary death. That is why, while an incident is open, a
connect counts as the recovery (dated when it happened) only once the session has
lasted ``stale_session``.

Without generations (a replay of plain logs) only the stale-session rule applies;
deaths are told apart by pid and the dedupe window, as before (see core.py).
"""

from __future__ import annotations

from dataclasses import replace
from enum import StrEnum

from healer.engine.model import Cause, Phase, ShareState
from healer.engine.rules import Policy
from healer.events import Event

__all__ = ["DEATHS", "Verdict", "connected", "death_of", "mark_dead", "started"]

DEATHS = frozenset(
    {
        "VirtiofsdExited",
        "VirtiofsdClientDisconnected",
        "VirtiofsdDaemonFailed",
        "VirtiofsdPanicked",
        "VirtiofsdChildTerminated",
        "VirtiofsdStartFailed",
        "BackendDisconnected",
    }
)
"""Kinds that report a daemon's death (or its failure to live at all)."""

_DEAD_KEPT = 8  # generations remembered as dead: late reports come within seconds
_DRAIN_WINDOW_S = 60.0


class Verdict(StrEnum):
    """What a death report is, for the share's daemons."""

    NEW = "new"  # the first report of this daemon's death: decide
    REPEAT = "repeat"  # that death was decided on already
    STALE = "stale"  # about a daemon older than the current one (or not tellable)
    DRAIN = "drain"  # a dead connection was drained: respawn at once, nothing more
    UNKNOWN = "unknown"  # no generations known: the pid and time-window rules decide


def started(share: ShareState, event: Event, now: float) -> ShareState:
    """``VirtiofsdStarted``: the share's newest daemon; its client, if it had one."""
    generation = event.origin.generation
    if generation is None:
        return share
    served = bool(getattr(event, "served", False))
    return replace(
        share,
        generation=generation,
        started=now,
        daemon_pid=event.origin.pid,
        served_by=generation if served else None,
        served_since=now if served else None,
        confirm_at=None,
        confirm_cause=None,
    )


def death_of(
    share: ShareState, event: Event, now: float, policy: Policy
) -> tuple[Verdict, int | None]:
    """Which daemon a death report is about, and what that makes of it."""
    generation = event.origin.generation
    if generation is None and share.generation is None:
        return _short(share, event, None, now, policy) or Verdict.UNKNOWN, None
    if generation is None:
        # The VMM's word: about the daemon serving it then, if healer knows that one.
        if share.started is not None and now < share.started:
            return Verdict.STALE, None
        if share.served_by is None or share.served_by != share.generation:
            return Verdict.STALE, None  # the daemon's own exit will decide
        generation = share.generation
    if generation in share.dead:
        return Verdict.REPEAT, generation
    if share.generation is not None and generation < share.generation:
        return Verdict.STALE, generation
    return _short(share, event, generation, now, policy) or Verdict.NEW, generation


def _short(
    share: ShareState, event: Event, generation: int | None, now: float, policy: Policy
) -> Verdict | None:
    """Within a short session: a clean exit is a drain; other reports wait for the exit."""
    if not _drained(share, generation, now, policy):
        return None
    if event.kind != "VirtiofsdExited":
        return Verdict.STALE  # the exit that follows tells a dead connection from a death
    clean = getattr(event, "status", None) == 0 and getattr(event, "signal", None) is None
    return Verdict.DRAIN if clean else None


def mark_dead(
    share: ShareState, generation: int | None, now: float, verdict: Verdict
) -> ShareState:
    """Remember a decided death; its session (and a pending recovery) ends with it."""
    dead = share.dead
    if generation is not None and generation not in dead:
        dead = (*dead, generation)[-_DEAD_KEPT:]
    drains = share.drains
    if verdict == Verdict.DRAIN:
        drains = (*(t for t in drains if t > now - _DRAIN_WINDOW_S), now)
    ended = generation is None or share.served_by == generation
    return replace(
        share,
        dead=dead,
        drains=drains,
        served_by=None if ended else share.served_by,
        served_since=None if ended else share.served_since,
        confirm_at=None if ended else share.confirm_at,
        confirm_cause=None if ended else share.confirm_cause,
    )


def connected(
    share: ShareState, event: Event, cause: Cause, policy: Policy
) -> tuple[ShareState, bool | None]:
    """A client connected: (new state, recover now?). ``None``: a dead daemon's line.

    While an incident is open the recovery waits ``stale_session`` (the caller's
    timer fires it, dated at the connect); a healthy share just notes the session.
    """
    generation = event.origin.generation
    if generation is not None and (
        generation in share.dead or (share.generation is not None and generation < share.generation)
    ):
        return share, None  # read late, from a daemon that is gone
    share = replace(share, served_by=generation, served_since=cause.time)
    if share.phase == Phase.HEALTHY or policy.stale_session_s <= 0:
        return share, True
    return replace(
        share, confirm_at=cause.time + policy.stale_session_s, confirm_cause=cause
    ), False


def _drained(share: ShareState, generation: int | None, now: float, policy: Policy) -> bool:
    """The daemon's client left within ``stale_session`` of connecting (and not too often)."""
    if policy.stale_session_s <= 0 or share.served_since is None:
        return False
    if generation is not None and share.served_by != generation:
        return False
    if now - share.served_since >= policy.stale_session_s:
        return False
    recent = [t for t in share.drains if t > now - _DRAIN_WINDOW_S]
    return len(recent) < policy.stale_limit
