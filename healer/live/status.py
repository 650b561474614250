"""What `healer status` shows, and the commands it accepts, made on the decision loop.

The status is a plain JSON object (documented in docs/control.md, stable: fields are
only ever added): healer's own pid, version, uptime, configuration digest and journal
position, and per share its phase, pause, daemon, client, incident and its first
failure, the last action and its outcome, the backoff and the circuit.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from healer import __version__
from healer.config import Config
from healer.engine import Command, Decision, Phase, Transition
from healer.engine.core import next_backoff
from healer.engine.model import COMMANDS
from healer.live.control import Peer
from healer.live.daemons import DaemonTable
from healer.observe import NullObserver
from healer.runner import Runner
from healer.supervise.held import has_client

__all__ = ["Incidents", "StatusSource", "answer", "iso", "outcome_fields"]

STATUS_VERSION = 1


def iso(seconds: float | None) -> str | None:
    """RFC 3339 UTC, as every time in the status is written."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


class Incidents(NullObserver):
    """The first failure of each share's open incident (an observer of transitions)."""

    def __init__(self) -> None:
        self.opened: dict[str, Transition] = {}

    def transition(self, transition: Transition) -> None:
        if transition.before == Phase.HEALTHY:
            self.opened[transition.share] = transition
        elif transition.after == Phase.HEALTHY:
            self.opened.pop(transition.share, None)


@dataclass(slots=True)
class StatusSource:
    """Everything the status reads: the running watchdog's parts."""

    config: Config
    config_digest: str
    runner: Runner
    daemons: DaemonTable
    incidents: Incidents
    started_at: float
    clock: Callable[[], float] = time.time


def status(source: StatusSource) -> dict[str, Any]:
    runner, now = source.runner, source.clock()
    journal = runner.journal
    return {
        "ok": True,
        "version": STATUS_VERSION,
        "healer": {
            "pid": _pid(),
            "version": __version__,
            "since": iso(source.started_at),
            "uptime_s": round(now - source.started_at, 3),
            "config": source.config.file,
            "config_digest": source.config_digest,
            "rules_digest": runner.engine.rules.digest,
            "journal": source.config.journal,
            "journal_seq": journal.seq if journal is not None else None,
        },
        "shares": [_share(source, share.name, share.socket, now) for share in source.config.shares],
    }


def _share(source: StatusSource, name: str, socket: str, now: float) -> dict[str, Any]:
    runner = source.runner
    state = runner.state.shares.get(name)
    daemon = source.daemons.current.get(name)
    alive = daemon is not None and daemon.alive
    opened = source.incidents.opened.get(name)
    last = runner.last_outcome.get(name)
    open_actions = sorted(d.key for d in runner.open.values() if d.share == name)
    policy = runner.engine.rules.policy
    phase = state.phase if state is not None else Phase.HEALTHY
    return {
        "name": name,
        "phase": phase.value,
        "paused": bool(state and state.paused),
        "daemon": {
            "pid": daemon.pid if alive and daemon is not None else None,
            "since": iso(daemon.started_at) if alive and daemon is not None else None,
            "generation": daemon.generation if daemon is not None else None,
        },
        "vmm_connected": _served(socket),
        "incident": None
        if opened is None
        else {
            "id": opened.incident,
            "since": iso(opened.time),
            "first_failure": opened.cause.kind if opened.cause else opened.reason,
            "where": f"{opened.cause.source}:{opened.cause.line}" if opened.cause else None,
            "rule": opened.reason,
        },
        "last_action": None if last is None else outcome_fields(*last),
        "pending_actions": open_actions,
        "backoff": {
            "attempt": state.attempt if state is not None else 0,
            "next_respawn_in_s": round(next_backoff(policy, name, state, now), 3)
            if state is not None
            else 0.0,
        },
        "circuit": {
            "open": phase == Phase.CIRCUIT_OPEN,
            "retry_at": iso(state.circuit_until) if state is not None else None,
        },
    }


def outcome_fields(decision: Decision, status: Any, detail: str) -> dict[str, Any]:
    """A share's last action as the status shows it (running healer or journal)."""
    return {
        "key": decision.key,
        "action": decision.action.value,
        "rule": decision.rule,
        "cause": decision.cause.kind if decision.cause else None,
        "decided": iso(decision.time),
        "outcome": str(status),
        "reason": detail,
    }


def _served(socket: str) -> bool | None:
    try:
        return has_client(socket)
    except OSError:
        return None


def _pid() -> int:
    return os.getpid()


def answer(source: StatusSource, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
    """The reply to one control request (on the decision loop)."""
    what = request.get("command")
    if what == "status":
        return status(source)
    if what not in COMMANDS:
        return {"ok": False, "error": f"unknown command {what!r}"}
    share = request.get("share")
    names = [s.name for s in source.config.shares]
    if share not in names:
        return {"ok": False, "error": f"no share {share!r} (configured: {', '.join(names)})"}
    assert isinstance(share, str)  # noqa: S101 - checked against the names
    outputs = source.runner.command(
        Command(source.clock(), str(what), share, peer.uid), pid=peer.pid
    )
    decided = [o.key for o in outputs if isinstance(o, Decision) and o.suppressed is None]
    return {"ok": True, "command": what, "share": share, "decided": decided}
