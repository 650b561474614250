"""The engine's vocabulary: phases, actions, outcome statuses, and the records it emits.

Everything here is a frozen value. The journal, the reports, the metrics and the live
actions all speak in these types, so mypy checks the domain where a typo would cost
most (a misspelt status would silently never match).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "DEFAULT_SHARE",
    "FINAL",
    "HEALING",
    "Action",
    "Cause",
    "Decision",
    "EngineState",
    "Output",
    "Pending",
    "Phase",
    "ShareState",
    "Status",
    "Tick",
    "Transition",
]

DEFAULT_SHARE = "default"
"""The share of events that name none (one-share setups, old log formats)."""


class Phase(StrEnum):
    """Where a share is in its incident life cycle."""

    HEALTHY = "healthy"
    FAILING = "failing"
    RECOVERING = "recovering"
    CIRCUIT_OPEN = "circuit-open"


class Action(StrEnum):
    """What a rule may ask for; the values are the names rules and journals use."""

    RESPAWN = "respawn_virtiofsd"
    ENSURE = "ensure_virtiofsd"
    READD = "readd_fs"
    REMOUNT = "remount_guest"
    OPEN_CIRCUIT = "open_circuit"
    NOTIFY = "notify"
    RESTART_VM = "restart_vm"


HEALING = frozenset({Action.RESPAWN, Action.ENSURE, Action.READD, Action.REMOUNT})
"""Actions that heal (and so move a failing share to recovering)."""


class Status(StrEnum):
    """An action's outcome, as journaled."""

    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CLOSED = "closed"  # not run, or settled without running: the detail says why
    WOULD_RUN = "would_run"  # a replay: decided, never executed


FINAL = frozenset(set(Status) - {Status.STARTED})
"""Statuses that end a decision."""


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passes with no event (live mode): due timers fire."""

    time: float


@dataclass(frozen=True, slots=True)
class Command:
    """An operator's command (live: through the control socket; journaled as an
    operator record and replayed like an event)."""

    time: float
    command: str  # one of COMMANDS
    share: str
    uid: int | None = None


COMMANDS = ("pause", "resume", "reset", "restart")
"""pause: no healing for the share until resume; reset: close its circuit and clear
its backoff (and make sure its virtiofsd runs); restart: a fresh virtiofsd now."""


@dataclass(frozen=True, slots=True)
class Cause:
    """The input a decision answers: where it was read."""

    kind: str
    source: str
    line: int
    offset: int
    time: float
    pid: int | None = None  # the process the line is about, when known
    generation: int | None = None  # the daemon instance, when healer numbered it
    guest: bool = False  # the guest wrote the line: it asks the host for nothing itself


@dataclass(frozen=True, slots=True)
class Decision:
    """An action for a share. ``key`` is its idempotency key; ``suppressed`` says why not."""

    key: str
    time: float
    not_before: float
    share: str
    incident: str
    action: Action
    rule: str
    cause: Cause | None
    after: str | None = None
    attempt: int = 0
    suppressed: str | None = None
    note: str | None = None  # why the engine decided it so (a drained stale connection)


@dataclass(frozen=True, slots=True)
class Transition:
    """A share changed phase; ``incident`` opens on failure and closes on recovery."""

    time: float
    share: str
    incident: str
    before: Phase
    after: Phase
    reason: str
    cause: Cause | None


Output = Decision | Transition


@dataclass(frozen=True, slots=True)
class ShareState:
    """Everything the engine remembers about one share."""

    phase: Phase = Phase.HEALTHY
    incident: str = ""
    incidents: int = 0
    outside: int = 0  # decisions made while healthy (info rules), numbered apart
    attempt: int = 0
    healthy_since: float | None = None
    circuit_until: float | None = None
    last: dict[str, float] = field(default_factory=dict)  # dedupe key -> decided at
    last_pid: dict[str, int] = field(default_factory=dict)  # dedupe key -> pid it answered
    daemon_pid: int | None = None  # the latest virtiofsd the logs showed alive
    ordinals: dict[str, int] = field(default_factory=dict)  # action -> n in incident
    # Live, healer numbers the daemons it runs (see healer.engine.daemons):
    generation: int | None = None  # the newest daemon instance
    started: float | None = None  # when it started (event time)
    dead: tuple[int, ...] = ()  # generations whose death was decided on (the latest few)
    served_by: int | None = None  # the generation that reported a client (None: unknown)
    served_since: float | None = None  # when that client connected
    confirm_at: float | None = None  # a recovery counts from served_since once this passes
    confirm_cause: Cause | None = None  # the connect that recovery will cite
    drains: tuple[float, ...] = ()  # stale connections drained in the last minute
    counted: tuple[str, ...] = ()  # "rule|generation" a storm window has counted already
    paused: bool = False  # an operator paused healing (maintenance)


@dataclass(frozen=True, slots=True)
class Pending:
    """An open pair: ``then`` must arrive by ``deadline`` or the rule escalates."""

    deadline: float
    cause: Cause


@dataclass(frozen=True, slots=True)
class EngineState:
    """The whole engine state; equal inputs give equal states."""

    clock: float = float("-inf")
    inputs: int = 0
    shares: dict[str, ShareState] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)  # socket or tag -> share
    windows: dict[str, tuple[float, ...]] = field(default_factory=dict)
    cooldowns: dict[str, float] = field(default_factory=dict)
    pairs: dict[str, Pending] = field(default_factory=dict)
    rates: dict[str, tuple[float, ...]] = field(default_factory=dict)  # source -> decided at
