"""The pure decision core: ``step(state, item) -> (state, outputs)``.

No I/O and no clock: time is the event time of the input (or of a :class:`Tick`).
State is immutable; every step returns a new one. Outputs are plain records:
:class:`Decision` (an action to run, or a suppressed one, with an idempotency key)
and :class:`Transition` (a share changed phase). Replay, live runs and journal
recovery all go through :meth:`Engine.step`, so they decide the same things.

Per share, the phase machine is::

    healthy --failure--> failing --healing decided--> recovering --recovery--> healthy
         any --open_circuit--> circuit-open --retry every circuit_retry s--> (half-open)
                               circuit-open --recovery--> healthy

Respawns back off like Kubernetes' CrashLoopBackOff: the first runs at once, then
``backoff_initial`` doubling to ``backoff_max``, each stretched by seeded jitter,
and the count resets after ``healthy_after`` seconds of health.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from healer.engine.rules import HEALING, Policy, Rule, RuleSet
from healer.events import Event

__all__ = [
    "DEFAULT_SHARE",
    "Cause",
    "Decision",
    "Engine",
    "EngineState",
    "Phase",
    "ShareState",
    "Tick",
    "Transition",
    "backoff_delay",
    "decision_from_dict",
    "output_from_dict",
    "output_to_dict",
    "state_from_dict",
    "state_to_dict",
]

DEFAULT_SHARE = "default"
"""The share of events that name none (one-share setups, old log formats)."""


class Phase:
    """Share phases, as the strings that appear in journals and reports."""

    HEALTHY = "healthy"
    FAILING = "failing"
    RECOVERING = "recovering"
    CIRCUIT_OPEN = "circuit-open"


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passes with no event (live mode): due timers fire."""

    time: float


@dataclass(frozen=True, slots=True)
class Cause:
    """The input a decision answers: where it was read."""

    kind: str
    source: str
    line: int
    offset: int
    time: float
    pid: int | None = None  # the process the line is about, when known


@dataclass(frozen=True, slots=True)
class Decision:
    """An action for a share. ``key`` is its idempotency key; ``suppressed`` says why not."""

    key: str
    time: float
    not_before: float
    share: str
    incident: str
    action: str
    rule: str
    cause: Cause | None
    after: str | None = None
    attempt: int = 0
    suppressed: str | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """A share changed phase; ``incident`` opens on failure and closes on recovery."""

    time: float
    share: str
    incident: str
    before: str
    after: str
    reason: str
    cause: Cause | None


Output = Decision | Transition


@dataclass(frozen=True, slots=True)
class ShareState:
    """Everything the engine remembers about one share."""

    phase: str = Phase.HEALTHY
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


def backoff_delay(policy: Policy, share: str, attempt: int) -> float:
    """Seconds to wait before respawn number ``attempt`` (0-based) of a share.

    The jitter comes from a source seeded with (policy seed, share, attempt), so it
    is the same in replay, live and after a restart, without any stored RNG state.
    """
    if attempt <= 0:
        return 0.0
    # The exponent is capped: the cap is reached long before, and 2.0 ** 1024 overflows
    # (a share failing slower than the storm rule counts reaches that many attempts).
    base = min(policy.backoff_max_s, policy.backoff_initial_s * 2.0 ** min(attempt - 1, 64))
    draw = random.Random(f"{policy.seed}:{share}:{attempt}").random()  # noqa: S311 - jitter, not crypto
    return round(base * (1 + policy.backoff_jitter * draw), 6)


class _Step:
    """Scratch space for one step: copies of the parts of the state that change."""

    def __init__(self, state: EngineState, now: float) -> None:
        self.now = now
        self.shares = dict(state.shares)
        self.aliases = state.aliases
        self.windows = state.windows
        self.cooldowns = state.cooldowns
        self.pairs = state.pairs
        self.out: list[Output] = []

    def share(self, name: str) -> ShareState:
        return self.shares.get(name) or ShareState()

    def put(self, name: str, share: ShareState) -> None:
        self.shares[name] = share


class Engine:
    """Applies a rule set; holds no state of its own."""

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules
        self.policy = rules.policy
        self._by_kind: dict[str, list[Rule]] = {}
        self._by_then: dict[str, list[Rule]] = {}
        for rule in rules.rules:
            for kind in rule.on:
                self._by_kind.setdefault(kind, []).append(rule)
            for kind in rule.then:
                self._by_then.setdefault(kind, []).append(rule)
        self._recovery = frozenset(rules.policy.recovery_kinds)
        self.kinds = rules.kinds()

    def initial(self) -> EngineState:
        return EngineState()

    def step(self, state: EngineState, item: Event | Tick) -> tuple[EngineState, list[Output]]:
        """Decide on one input.

        The engine's clock never runs backwards: an event older than one already seen
        (another source lagging, a clock that jumped) counts at the latest time seen.
        Events of kinds no rule uses only let due timers fire.
        """
        if isinstance(item, Tick):
            return self._tick(state, item.time)
        if item.kind not in self.kinds and item.kind != "FsDeviceCreating":
            if item.time is None:
                return state, []
            return self._tick(state, item.time.timestamp())
        if item.time is not None:
            now = max(item.time.timestamp(), state.clock)
        else:  # no time in the log: the last known time, as replay carries it
            now = state.clock if state.clock != float("-inf") else 0.0
        run = _Step(state, now)
        # Only virtiofsd's own pid tells two deaths apart (a supervisor's pid does not).
        pid = item.origin.pid if item.origin.program == "virtiofsd" else None
        cause = Cause(item.kind, item.source, item.line, item.offset, now, pid)
        share = self._share_of(run, item)
        if pid is not None and item.kind != "VirtiofsdExited":  # a sign of that daemon's life
            current = run.share(share)
            if current.daemon_pid != pid:
                run.put(share, replace(current, daemon_pid=pid))
        self._fire_due(run, now)
        if item.kind in self._recovery:
            self._recover(run, share, cause)
        for rule in self._by_then.get(item.kind, ()):
            key = f"{rule.id}|{share}"
            pending = run.pairs.get(key)
            if pending is not None and now <= pending.deadline:
                run.pairs = {k: v for k, v in run.pairs.items() if k != key}
                self._act(run, share, rule, rule.then_actions, cause=cause)
        fired = [
            rule
            for rule in self._by_kind.get(item.kind, ())
            if rule.matches(item) and self._correlate(run, rule, share, cause)
        ]
        # A storm opens the circuit before anything heals on the same event, and an
        # open circuit is not opened (nor alerted) again.
        fired.sort(key=lambda rule: "open_circuit" not in rule.actions)
        if self._stale(run, share, item):
            return self._commit(state, run), run.out
        for rule in fired:
            if "open_circuit" in rule.actions and run.share(share).phase == Phase.CIRCUIT_OPEN:
                continue
            self._act(run, share, rule, rule.actions, cause=cause)
        return self._commit(state, run), run.out

    @staticmethod
    def _stale(run: _Step, share: str, event: Event) -> bool:
        """A failure written before the share's last recovery was read after it.

        Live, logs arrive by different paths (virtiofsd's stderr at once, a VMM log a
        poll later): a disconnect line about the daemon that was already replaced must
        not open a new incident. It still counts towards storms; it decides nothing.
        """
        state = run.share(share)
        return (
            event.time is not None
            and state.phase == Phase.HEALTHY
            and state.incidents > 0  # it was healed; a first connect proves less
            and state.healthy_since is not None
            and event.time.timestamp() < state.healthy_since
        )

    # --- inputs -----------------------------------------------------------------

    def _share_of(self, run: _Step, event: Event) -> str:
        """Learn tag <-> socket from FsDeviceCreating; name a share by its tag."""
        tag = getattr(event, "tag", None)
        socket = getattr(event, "socket", None)
        if event.kind == "FsDeviceCreating" and tag and socket and run.aliases.get(socket) != tag:
            run.aliases = {**run.aliases, socket: tag}
        name = event.share
        if name is None:
            return DEFAULT_SHARE
        return run.aliases.get(name, name)

    def _tick(self, state: EngineState, now: float) -> tuple[EngineState, list[Output]]:
        if now <= state.clock or not self._due(state, now):
            return state, []
        run = _Step(state, now)
        self._fire_due(run, now)
        if not run.out:
            return state, []
        return self._commit(state, run, count=False), run.out

    def _commit(self, state: EngineState, run: _Step, *, count: bool = True) -> EngineState:
        return EngineState(
            clock=max(state.clock, run.now),
            inputs=state.inputs + (1 if count else 0),
            shares=run.shares,
            aliases=run.aliases,
            windows=run.windows,
            cooldowns=run.cooldowns,
            pairs=run.pairs,
        )

    # --- timers -----------------------------------------------------------------

    @staticmethod
    def _due(state: EngineState, now: float) -> bool:
        """Whether some pair deadline or circuit retry has come."""
        if any(now > pending.deadline for pending in state.pairs.values()):
            return True
        return any(
            share.phase == Phase.CIRCUIT_OPEN
            and share.circuit_until is not None
            and now >= share.circuit_until
            for share in state.shares.values()
        )

    def _fire_due(self, run: _Step, now: float) -> None:
        """Pairs past their deadline escalate; open circuits retry when due."""
        for key in sorted(k for k, p in run.pairs.items() if now > p.deadline):
            pending = run.pairs[key]
            rule_id, share = key.split("|", 1)
            rule = next(r for r in self.rules.rules if r.id == rule_id)
            run.pairs = {k: v for k, v in run.pairs.items() if k != key}
            self._act(run, share, rule, rule.actions, cause=pending.cause, at=pending.deadline)
        for name in sorted(run.shares):
            state = run.shares[name]
            due = state.circuit_until
            if state.phase == Phase.CIRCUIT_OPEN and due is not None and now >= due:
                run.put(name, replace(state, circuit_until=due + self.policy.circuit_retry_s))
                self._decide(
                    run,
                    name,
                    "respawn_virtiofsd",
                    "circuit-retry",
                    cause=None,
                    when=due,
                    retry=True,
                )

    # --- correlation ------------------------------------------------------------

    def _correlate(self, run: _Step, rule: Rule, share: str, cause: Cause) -> bool:
        key = f"{rule.id}|{share}"
        now = cause.time
        if rule.correlate == "single":
            return True
        if rule.correlate == "cooldown":
            last = run.cooldowns.get(key)
            if last is not None and now - last < rule.window_s:
                return False
            run.cooldowns = {**run.cooldowns, key: now}
            return True
        if rule.correlate == "threshold":
            times = tuple(t for t in run.windows.get(key, ()) if t >= now - rule.window_s)
            times += (now,)
            if len(times) >= rule.count:
                run.windows = {k: v for k, v in run.windows.items() if k != key}
                return True
            run.windows = {**run.windows, key: times}
            return False
        # pair: start waiting for 'then' (an earlier wait keeps its deadline)
        if key not in run.pairs:
            run.pairs = {**run.pairs, key: Pending(now + rule.window_s, cause)}
        return False

    # --- decisions --------------------------------------------------------------

    def _act(
        self,
        run: _Step,
        share: str,
        rule: Rule,
        actions: tuple[str, ...],
        *,
        cause: Cause | None,
        at: float | None = None,
    ) -> None:
        """A rule fired: open an incident if needed, then decide its actions in order."""
        if not actions:
            return
        when = run.now if at is None else at
        state = run.share(share)
        acts = rule.severity != "info" or any(a in HEALING or a == "open_circuit" for a in actions)
        if state.phase == Phase.HEALTHY and acts:
            if all(self._repeats(state, a, rule.id, cause, when) for a in actions):
                return  # a late report of what was just healed: no new incident
            self._open_incident(run, share, rule, cause, when)
        after: str | None = None
        for action in actions:
            decided = self._decide(run, share, action, rule.id, cause=cause, when=when, after=after)
            after = decided or after

    def _repeats(
        self, state: ShareState, action: str, rule: str, cause: Cause | None, when: float
    ) -> bool:
        """The same action for the share within the dedupe window, about the same process,
        with no recovery in between (a death after a recovery is a new death)."""
        dedupe = _dedupe_key(action, rule)
        last = state.last.get(dedupe)
        if last is None or when - last >= self.policy.dedupe_s:
            return False
        if state.healthy_since is not None and state.healthy_since > last:
            return False
        pid = cause.pid if cause is not None else None
        known = state.last_pid.get(dedupe)
        return pid is None or known is None or pid == known

    def _open_incident(
        self, run: _Step, share: str, rule: Rule, cause: Cause | None, when: float
    ) -> None:
        state = run.share(share)
        number = state.incidents + 1
        incident = f"{share}#{number}"
        healthy_long = (
            state.healthy_since is not None
            and when - state.healthy_since >= self.policy.healthy_after_s
        )
        run.put(
            share,
            replace(
                state,
                phase=Phase.FAILING,
                incident=incident,
                incidents=number,
                attempt=0 if healthy_long else state.attempt,
                ordinals={},
            ),
        )
        run.out.append(
            Transition(when, share, incident, Phase.HEALTHY, Phase.FAILING, rule.id, cause)
        )

    def _decide(
        self,
        run: _Step,
        share: str,
        action: str,
        rule: str,
        *,
        cause: Cause | None,
        when: float,
        after: str | None = None,
        retry: bool = False,
    ) -> str | None:
        """Record one decision (or a suppressed one); return its key when it will run."""
        state = run.share(share)
        if not retry and self._repeats(state, action, rule, cause, when):
            return None  # the same request, seen again within the dedupe window
        dedupe = _dedupe_key(action, rule)
        # A line that names no pid (the VMM's) is about the daemon alive at the time:
        # a later death of a newer daemon is a new death, not a repeat.
        pid = cause.pid if cause is not None and cause.pid is not None else state.daemon_pid
        suppressed = None
        if state.phase == Phase.CIRCUIT_OPEN and action in HEALING and not retry:
            suppressed = "circuit open"
        elif action == "restart_vm" and not self.policy.allow_restart_vm:
            suppressed = "restart_vm is not allowed by the policy"
        attempt, delay = 0, 0.0
        if action == "respawn_virtiofsd" and suppressed is None and not retry:
            attempt = state.attempt
            delay = backoff_delay(self.policy, share, attempt)
            state = replace(state, attempt=attempt + 1)
        if state.phase == Phase.HEALTHY:  # an info rule: no incident is open
            incident, ordinal = f"{share}#0", state.outside + 1
            state = replace(state, outside=ordinal)
        else:
            incident, ordinal = state.incident, state.ordinals.get(action, 0) + 1
        key = f"{incident}/{action}/{ordinal}"
        decision = Decision(
            key=key,
            time=when,
            not_before=round(when + delay, 6),
            share=share,
            incident=incident,
            action=action,
            rule=rule,
            cause=cause,
            after=after,
            attempt=attempt,
            suppressed=suppressed,
        )
        state = replace(state, last={**state.last, dedupe: when})
        if pid is not None:
            state = replace(state, last_pid={**state.last_pid, dedupe: pid})
        if state.phase != Phase.HEALTHY:
            state = replace(state, ordinals={**state.ordinals, action: ordinal})
        if action == "open_circuit" and state.phase != Phase.CIRCUIT_OPEN:
            run.out.append(
                Transition(when, share, incident, state.phase, Phase.CIRCUIT_OPEN, rule, cause)
            )
            state = replace(
                state,
                phase=Phase.CIRCUIT_OPEN,
                circuit_until=when + self.policy.circuit_retry_s,
            )
        elif action in HEALING and suppressed is None and state.phase == Phase.FAILING:
            run.out.append(
                Transition(when, share, incident, state.phase, Phase.RECOVERING, rule, cause)
            )
            state = replace(state, phase=Phase.RECOVERING)
        run.put(share, state)
        run.out.append(decision)
        return None if suppressed else key

    def _recover(self, run: _Step, share: str, cause: Cause) -> None:
        """A recovery signal: the share is served again; close the incident."""
        state = run.share(share)
        if state.phase == Phase.HEALTHY:
            if state.healthy_since is None:
                run.put(share, replace(state, healthy_since=cause.time))
            return
        run.out.append(
            Transition(
                cause.time, share, state.incident, state.phase, Phase.HEALTHY, cause.kind, cause
            )
        )
        run.put(
            share,
            replace(
                state,
                phase=Phase.HEALTHY,
                incident="",
                healthy_since=cause.time,
                circuit_until=None,
            ),
        )


def _dedupe_key(action: str, rule: str) -> str:
    """Healing actions merge across rules; other actions per rule."""
    return action if action in HEALING or action == "open_circuit" else f"{action}:{rule}"


def output_to_dict(output: Output) -> dict[str, Any]:
    """JSON-ready form of a decision or transition (journal, reports)."""
    data = asdict(output)
    data["type"] = "decision" if isinstance(output, Decision) else "transition"
    return data


def decision_from_dict(data: dict[str, Any]) -> Decision:
    """A journaled decision record back as a Decision."""
    values = {k: v for k, v in data.items() if k not in ("type", "v", "seq")}
    cause = values.get("cause")
    values["cause"] = Cause(**cause) if cause else None
    return Decision(**values)


def output_from_dict(data: dict[str, Any]) -> Output:
    """Inverse of :func:`output_to_dict`."""
    if data["type"] == "decision":
        return decision_from_dict(data)
    values = {k: v for k, v in data.items() if k not in ("type", "v", "seq")}
    cause = values.get("cause")
    values["cause"] = Cause(**cause) if cause else None
    return Transition(**values)


def state_to_dict(state: EngineState) -> dict[str, Any]:
    """JSON-ready engine state, for journal snapshots."""
    return {
        "clock": state.clock if state.clock != float("-inf") else None,
        "inputs": state.inputs,
        "shares": {name: asdict(share) for name, share in state.shares.items()},
        "aliases": state.aliases,
        "windows": {k: list(v) for k, v in state.windows.items()},
        "cooldowns": state.cooldowns,
        "pairs": {k: asdict(v) for k, v in state.pairs.items()},
    }


def state_from_dict(data: dict[str, Any]) -> EngineState:
    """Inverse of :func:`state_to_dict`."""
    clock = data["clock"]
    return EngineState(
        clock=float("-inf") if clock is None else clock,
        inputs=data["inputs"],
        shares={name: ShareState(**share) for name, share in data["shares"].items()},
        aliases=dict(data["aliases"]),
        windows={k: tuple(v) for k, v in data["windows"].items()},
        cooldowns=dict(data["cooldowns"]),
        pairs={k: Pending(v["deadline"], Cause(**v["cause"])) for k, v in data["pairs"].items()},
    )
