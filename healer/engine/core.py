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
from dataclasses import replace

from healer.engine import daemons, trust
from healer.engine.daemons import DEATHS, Verdict
from healer.engine.model import (
    DEFAULT_SHARE,
    HEALING,
    Action,
    Cause,
    Command,
    Decision,
    EngineState,
    Output,
    Pending,
    Phase,
    ShareState,
    Tick,
    Transition,
)
from healer.engine.rules import Policy, Rule, RuleSet
from healer.events import Event

__all__ = ["Engine", "backoff_delay", "next_backoff"]


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


def next_backoff(policy: Policy, name: str, share: ShareState, at: float) -> float:
    """How long the share's next respawn would wait, at event time ``at``.

    The count of respawns starts over once the share has been healthy for
    ``healthy_after`` (the same test :meth:`Engine._open_incident` applies).
    """
    return backoff_delay(policy, name, 0 if _healthy_long(policy, share, at) else share.attempt)


def _healthy_long(policy: Policy, share: ShareState, at: float) -> bool:
    return (
        share.phase == Phase.HEALTHY
        and share.healthy_since is not None
        and at - share.healthy_since >= policy.healthy_after_s
    )


class _Step:
    """Scratch space for one step: copies of the parts of the state that change."""

    def __init__(self, state: EngineState, now: float) -> None:
        self.now = now
        self.shares = dict(state.shares)
        self.aliases = state.aliases
        self.windows = state.windows
        self.cooldowns = state.cooldowns
        self.pairs = state.pairs
        self.rates = state.rates
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
        self._rules = {rule.id: rule for rule in rules.rules}
        self._recovery = frozenset(rules.policy.recovery_kinds)
        self.kinds = rules.kinds()

    def initial(self) -> EngineState:
        return EngineState()

    def is_current(self, state: EngineState, decision: Decision) -> bool:
        """Whether a decision still belongs to what is going on for its share.

        A decision made outside any incident (an info rule) always does; one made in
        an incident does while that incident is open. A respawn waiting for its
        backoff whose incident has closed meanwhile has nothing left to heal.
        """
        if decision.incident.endswith("#0"):
            return True
        share = state.shares.get(decision.share)
        return share is not None and share.incident == decision.incident

    def next_due(self, state: EngineState) -> float | None:
        """Event time of the earliest timer: a pair deadline or a circuit retry."""
        times = [pending.deadline for pending in state.pairs.values()]
        times += [
            share.circuit_until
            for share in state.shares.values()
            if share.phase == Phase.CIRCUIT_OPEN and share.circuit_until is not None
        ]
        times += [s.confirm_at for s in state.shares.values() if s.confirm_at is not None]
        return min(times) if times else None

    def finish(self, state: EngineState) -> tuple[EngineState, list[Output]]:
        """The input has ended (a replay): recoveries still waiting for their session to
        last are confirmed, dated at their connect; nothing else fires."""
        pending = [s.confirm_at for s in state.shares.values() if s.confirm_at is not None]
        if not pending:
            return state, []
        run = _Step(state, state.clock)
        for name in sorted(run.shares):
            share = run.shares[name]
            if share.confirm_at is not None and share.confirm_cause is not None:
                connect = share.confirm_cause
                run.put(name, replace(share, confirm_at=None, confirm_cause=None))
                self._recover(run, name, connect)
        return self._commit(state, run, count=False), run.out

    def adopt(self, state: EngineState) -> tuple[EngineState, list[str]]:
        """State folded under other rules, fitted to these: what no rule can use goes.

        Pair, threshold and cooldown entries are keyed ``rule|share`` (``|guest`` after
        it for the guest's lines); those of rules
        that do not exist (or changed how they correlate) now would never fire, or
        would fire wrongly. Returns the new state and what was dropped, in words.
        """
        by_id = {rule.id: rule for rule in self.rules.rules}
        dropped: list[str] = []

        def keep(table: str, key: str, correlate: str) -> bool:
            rule = by_id.get(key.split("|", 1)[0])
            if rule is not None and rule.correlate == correlate:
                return True
            dropped.append(f"{table} {key}: rule {key.split('|', 1)[0]} is not in the rules now")
            return False

        pairs = {k: v for k, v in state.pairs.items() if keep("pending pair", k, "pair")}
        windows = {k: v for k, v in state.windows.items() if keep("window", k, "threshold")}
        cooldowns = {k: v for k, v in state.cooldowns.items() if keep("cooldown", k, "cooldown")}
        return replace(state, pairs=pairs, windows=windows, cooldowns=cooldowns), dropped

    def step(
        self, state: EngineState, item: Event | Tick | Command
    ) -> tuple[EngineState, list[Output]]:
        """Decide on one input.

        The engine's clock never runs backwards: an event older than one already seen
        (another source lagging, a clock that jumped) counts at the latest time seen.
        Events of kinds no rule uses only let due timers fire.
        """
        if isinstance(item, Tick):
            return self._tick(state, item.time)
        if isinstance(item, Command):
            return self._command(state, item)
        return self._event(state, item)

    def _event(self, state: EngineState, item: Event) -> tuple[EngineState, list[Output]]:
        if item.kind not in self.kinds and item.kind not in _ALWAYS:
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
        guest = item.origin.guest or item.kind in trust.GUEST_KINDS
        cause = Cause(
            item.kind, item.source, item.line, item.offset, now, pid, item.origin.generation, guest
        )
        share = self._share_of(run, item)
        if pid is not None and item.kind != "VirtiofsdExited":  # a sign of that daemon's life
            current = run.share(share)
            if current.daemon_pid != pid:
                run.put(share, replace(current, daemon_pid=pid))
        self._fire_due(run, now)
        if item.kind == "VirtiofsdStarted":
            run.put(share, daemons.started(run.share(share), item, now))
            return self._commit(state, run), run.out
        if item.kind in DEATHS and guest:
            # The guest's word about a daemon's death decides nothing: healer's own
            # observation of the death does (it always sees its daemons end).
            return self._commit(state, run), run.out
        if item.kind in DEATHS:
            # Whom a report is about follows from when it was written, not from the
            # engine's clock (which a later line may have moved on already).
            written = item.time.timestamp() if item.time is not None else now
            verdict, generation = daemons.death_of(run.share(share), item, written, self.policy)
            if verdict in (Verdict.REPEAT, Verdict.STALE):
                return self._commit(state, run), run.out  # decided already, or by another
            if verdict != Verdict.UNKNOWN:
                cause = replace(cause, generation=generation)
            if verdict == Verdict.DRAIN:
                run.put(share, daemons.mark_dead(run.share(share), generation, now, verdict))
                self._drain(run, share, item, cause)
                return self._commit(state, run), run.out
            if verdict == Verdict.NEW:
                # The death is decided once some rule decides on it: a report no rule
                # heals (a start failure only storms count) leaves it to the exit.
                before = len(run.out)
                self._fire(run, share, item, cause)
                if any(isinstance(out, Decision) for out in run.out[before:]):
                    run.put(share, daemons.mark_dead(run.share(share), generation, now, verdict))
                return self._commit(state, run), run.out
        if item.kind == "VirtiofsdClientConnected" and item.kind in self._recovery:
            current, now_or_later = daemons.connected(run.share(share), item, cause, self.policy)
            run.put(share, current)
            if now_or_later:
                self._recover(run, share, cause)
        elif item.kind in self._recovery:
            self._recover(run, share, cause)
        for rule in self._by_then.get(item.kind, ()):
            key = _window_key(rule, share, cause)
            pending = run.pairs.get(key)
            if pending is not None and now <= pending.deadline:
                run.pairs = {k: v for k, v in run.pairs.items() if k != key}
                self._act(run, share, rule, rule.then_actions, cause=cause)
        if cause.generation is None and self._stale(run, share, item):
            self._fire(run, share, item, cause, count_only=True)
            return self._commit(state, run), run.out
        self._fire(run, share, item, cause)
        return self._commit(state, run), run.out

    def _fire(
        self, run: _Step, share: str, item: Event, cause: Cause, *, count_only: bool = False
    ) -> None:
        """The rules for this event: correlated (windows counted), then acted on."""
        fired = [
            rule
            for rule in self._by_kind.get(item.kind, ())
            if rule.matches(item) and self._correlate(run, rule, share, cause)
        ]
        if count_only:
            return
        # A storm opens the circuit before anything heals on the same event, and an
        # open circuit is not opened (nor alerted) again.
        fired.sort(key=lambda rule: Action.OPEN_CIRCUIT not in rule.actions)
        for rule in fired:
            if Action.OPEN_CIRCUIT in rule.actions and run.share(share).phase == Phase.CIRCUIT_OPEN:
                continue
            self._act(run, share, rule, rule.actions, cause=cause)

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

    def _command(self, state: EngineState, command: Command) -> tuple[EngineState, list[Output]]:
        """An operator's command: pause or resume healing, reset the circuit and the
        backoff, restart the daemon. Its decisions cite the operator as their cause."""
        now = max(command.time, state.clock)
        run = _Step(state, now)
        self._fire_due(run, now)
        name = command.share
        share = run.share(name)
        who = f"operator:uid={command.uid}" if command.uid is not None else "operator"
        cause = Cause(f"operator {command.command}", who, 0, 0, now)
        rule = f"operator-{command.command}"
        if command.command == "pause":
            run.put(name, replace(share, paused=True))
        elif command.command == "resume":
            run.put(name, replace(share, paused=False))
            self._decide(run, name, Action.ENSURE, rule, cause=cause, when=now, retry=True)
        elif command.command == "reset":
            if share.phase == Phase.CIRCUIT_OPEN:
                run.out.append(
                    Transition(now, name, share.incident, share.phase, Phase.FAILING, rule, cause)
                )
                share = replace(share, phase=Phase.FAILING)
            run.put(name, replace(share, attempt=0, circuit_until=None))
            self._decide(run, name, Action.ENSURE, rule, cause=cause, when=now, retry=True)
        elif command.command == "restart":
            # The running daemon's end is this decision's doing, not a death to heal.
            run.put(name, daemons.mark_dead(share, share.generation, now, Verdict.NEW))
            self._decide(
                run,
                name,
                Action.RESPAWN,
                rule,
                cause=cause,
                when=now,
                retry=True,
                note="restarted by the operator",
            )
        return self._commit(state, run), run.out

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
            rates=run.rates,
        )

    # --- timers -----------------------------------------------------------------

    @staticmethod
    def _due(state: EngineState, now: float) -> bool:
        """Whether some pair deadline, circuit retry or recovery confirmation has come."""
        if any(now > pending.deadline for pending in state.pairs.values()):
            return True
        return any(
            (
                share.phase == Phase.CIRCUIT_OPEN
                and share.circuit_until is not None
                and now >= share.circuit_until
            )
            or (share.confirm_at is not None and now >= share.confirm_at)
            for share in state.shares.values()
        )

    def _fire_due(self, run: _Step, now: float) -> None:
        """Recoveries whose session lasted are confirmed; pairs past their deadline
        escalate; open circuits retry when due."""
        for name in sorted(run.shares):
            state = run.shares[name]
            if state.confirm_at is not None and now >= state.confirm_at:
                connect = state.confirm_cause
                run.put(name, replace(state, confirm_at=None, confirm_cause=None))
                if connect is not None:
                    self._recover(run, name, connect)
        for key in sorted(k for k, p in run.pairs.items() if now > p.deadline):
            pending = run.pairs[key]
            rule_id, share = key.split("|")[:2]  # rule|share, or rule|share|guest
            run.pairs = {k: v for k, v in run.pairs.items() if k != key}
            rule = self._rules.get(rule_id)
            if rule is None:  # a state folded under other rules (see adopt)
                continue
            self._act(run, share, rule, rule.actions, cause=pending.cause, at=pending.deadline)
        for name in sorted(run.shares):
            state = run.shares[name]
            due = state.circuit_until
            if state.phase == Phase.CIRCUIT_OPEN and due is not None and now >= due:
                run.put(name, replace(state, circuit_until=due + self.policy.circuit_retry_s))
                self._decide(
                    run,
                    name,
                    Action.RESPAWN,
                    "circuit-retry",
                    cause=None,
                    when=due,
                    retry=True,
                )

    # --- correlation ------------------------------------------------------------

    def _correlate(self, run: _Step, rule: Rule, share: str, cause: Cause) -> bool:
        key = _window_key(rule, share, cause)
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
            if cause.generation is not None:  # one daemon's death counts once, however told
                seen = run.share(share)
                mark = f"{rule.id}|{cause.generation}"
                if mark in seen.counted:
                    return False
                run.put(share, replace(seen, counted=(*seen.counted, mark)[-16:]))
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
        actions: tuple[Action, ...],
        *,
        cause: Cause | None,
        at: float | None = None,
    ) -> None:
        """A rule fired: open an incident if needed, then decide its actions in order."""
        if not actions:
            return
        when = run.now if at is None else at
        if cause is not None and cause.guest:
            self._guest_asks(run, share, rule, actions, cause=cause, when=when)
            return
        state = run.share(share)
        acts = rule.severity != "info" or any(
            a in HEALING or a == Action.OPEN_CIRCUIT for a in actions
        )
        if state.phase == Phase.HEALTHY and acts:
            if all(self._repeats(state, a, rule.id, cause, when) for a in actions):
                return  # a late report of what was just healed: no new incident
            self._open_incident(run, share, rule, cause, when)
        after: str | None = None
        for action in actions:
            decided = self._decide(run, share, action, rule.id, cause=cause, when=when, after=after)
            after = decided or after

    def _guest_asks(
        self,
        run: _Step,
        share: str,
        rule: Rule,
        actions: tuple[Action, ...],
        *,
        cause: Cause,
        when: float,
    ) -> None:
        """A guest-written line: each action in the form the host checks first, outside
        any incident (see healer.engine.trust). While an incident is open the host is
        healing the share already: the guest's word adds nothing."""
        if run.share(share).phase != Phase.HEALTHY:
            return
        after: str | None = None
        for asked in actions:
            action, note = trust.as_guest_asks(asked)
            decided = self._decide(
                run, share, action, rule.id, cause=cause, when=when, after=after, note=note
            )
            after = decided or after

    def _repeats(
        self, state: ShareState, action: Action, rule: str, cause: Cause | None, when: float
    ) -> bool:
        """The same action for the share within the dedupe window, about the same process,
        with no recovery in between (a death after a recovery is a new death)."""
        if cause is not None and cause.generation is not None:
            return False  # deduplicated by daemon generation already (daemons.py)
        if cause is not None and cause.guest and self._host_did(state, action, rule, when):
            return True  # the host asked for it already (a recovery since changes nothing)
        dedupe = _dedupe_key(action, rule, guest=cause is not None and cause.guest)
        last = state.last.get(dedupe)
        if last is None or when - last >= self.policy.dedupe_s:
            return False
        if state.healthy_since is not None and state.healthy_since > last:
            return False
        pid = cause.pid if cause is not None else None
        known = state.last_pid.get(dedupe)
        return pid is None or known is None or pid == known

    def _host_did(self, state: ShareState, action: Action, rule: str, when: float) -> bool:
        """A host-caused decision of this action (a respawn counts for an ensure) within
        the dedupe window: what a guest-written line asks for then is a repeat."""
        asked = (action, Action.RESPAWN) if action == Action.ENSURE else (action,)
        for each in asked:
            last = state.last.get(_dedupe_key(each, rule))
            if last is not None and when - last < self.policy.dedupe_s:
                return True
        return False

    def _open_incident(
        self, run: _Step, share: str, rule: Rule, cause: Cause | None, when: float
    ) -> None:
        state = run.share(share)
        number = state.incidents + 1
        incident = f"{share}#{number}"
        healthy_long = _healthy_long(self.policy, state, when)
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
        action: Action,
        rule: str,
        *,
        cause: Cause | None,
        when: float,
        after: str | None = None,
        retry: bool = False,
        note: str | None = None,
    ) -> str | None:
        """Record one decision (or a suppressed one); return its key when it will run.

        ``note`` (a drained stale connection) decides a respawn at once: no backoff,
        no attempt counted. A guest-written cause decides outside any incident and
        never moves the share's phase."""
        state = run.share(share)
        if not retry and self._repeats(state, action, rule, cause, when):
            return None  # the same request, seen again within the dedupe window
        dedupe = _dedupe_key(action, rule, guest=cause is not None and cause.guest)
        # A line that names no pid (the VMM's) is about the daemon alive at the time:
        # a later death of a newer daemon is a new death, not a repeat.
        pid = cause.pid if cause is not None and cause.pid is not None else state.daemon_pid
        guest = cause is not None and cause.guest
        suppressed = self._suppression(run, state, action, cause, when, retry=retry)
        if suppressed is None:
            run.rates = trust.decided_at(run.rates, self.policy, cause, when)
        attempt, delay = 0, 0.0
        if action == Action.RESPAWN and suppressed is None and not retry and note is None:
            attempt = state.attempt
            delay = backoff_delay(self.policy, share, attempt)
            state = replace(state, attempt=attempt + 1)
        if state.phase == Phase.HEALTHY or guest:  # an info rule, or the guest's word
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
            note=note,
        )
        state = replace(state, last={**state.last, dedupe: when})
        if pid is not None:
            state = replace(state, last_pid={**state.last_pid, dedupe: pid})
        if not guest:  # the guest's word moves no phase
            state = self._advance(run, state, decision, ordinal)
        run.put(share, state)
        run.out.append(decision)
        return None if suppressed else key

    def _suppression(
        self,
        run: _Step,
        state: ShareState,
        action: Action,
        cause: Cause | None,
        when: float,
        *,
        retry: bool,
    ) -> str | None:
        """Why a decision is not to run (None: it runs)."""
        operator = cause is not None and cause.source.startswith("operator")
        if state.paused and not operator and action != Action.NOTIFY:
            return "paused by the operator"
        if cause is not None and cause.guest:
            refused = trust.guest_refusal(action)
            if refused is not None:
                return refused
        if state.phase == Phase.CIRCUIT_OPEN and action in HEALING and not retry:
            return "circuit open"
        if action == Action.RESTART_VM and not self.policy.allow_restart_vm:
            return "restart_vm is not allowed by the policy"
        if retry:
            return None  # the circuit's own slow retry
        return trust.over_rate(run.rates, self.policy, cause, when)

    def _advance(
        self, run: _Step, state: ShareState, decision: Decision, ordinal: int
    ) -> ShareState:
        """The share's incident bookkeeping and phase after a decision in an incident."""
        share, incident, action, rule = (
            decision.share,
            decision.incident,
            decision.action,
            decision.rule,
        )
        cause, when = decision.cause, decision.time
        if state.phase != Phase.HEALTHY:
            state = replace(state, ordinals={**state.ordinals, action.value: ordinal})
        if decision.suppressed is not None:
            return state
        if action == Action.OPEN_CIRCUIT and state.phase != Phase.CIRCUIT_OPEN:
            run.out.append(
                Transition(when, share, incident, state.phase, Phase.CIRCUIT_OPEN, rule, cause)
            )
            state = replace(
                state,
                phase=Phase.CIRCUIT_OPEN,
                circuit_until=when + self.policy.circuit_retry_s,
            )
        elif action in HEALING and state.phase == Phase.FAILING:
            run.out.append(
                Transition(when, share, incident, state.phase, Phase.RECOVERING, rule, cause)
            )
            state = replace(state, phase=Phase.RECOVERING)
        return state

    def _drain(self, run: _Step, share: str, event: Event, cause: Cause) -> None:
        """A dead connection was served and is gone: the next daemon, at once.

        No incident opens for it and no storm counts it; the rule named is the one
        that respawns for this kind (the decision cites it), if any."""
        rule = next(
            (
                r
                for r in self._by_kind.get(event.kind, ())
                if Action.RESPAWN in r.actions and r.matches(event)
            ),
            None,
        )
        session = ""
        state = run.share(share)
        since = cause.time - (state.served_since or cause.time)
        session = f"the client left {since * 1000:.0f} ms after connecting" if since else ""
        note = f"stale connection drained: {session or 'its client left at once'}"
        self._decide(
            run,
            share,
            Action.RESPAWN,
            rule.id if rule is not None else "stale-connection",
            cause=cause,
            when=cause.time,
            note=note,
        )

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


_ALWAYS = frozenset({"FsDeviceCreating", "VirtiofsdStarted"})
"""Kinds the engine reads whether or not a rule names them."""


def _window_key(rule: Rule, share: str, cause: Cause) -> str:
    """A rule's window, cooldown or pair for a share; the guest's lines count in one of
    their own, so that forged lines can neither fill the host's storm windows nor answer
    the host's pairs."""
    key = f"{rule.id}|{share}"
    return f"{key}|guest" if cause.guest else key


def _dedupe_key(action: Action, rule: str, *, guest: bool = False) -> str:
    """Healing actions merge across rules; other actions per rule (plain strings: the
    keys go into the journal's JSON). The guest's requests are kept apart, so that a
    line it forged cannot make the host's own report of a fault look like a repeat."""
    merged = action in HEALING or action == Action.OPEN_CIRCUIT
    key = action.value if merged else f"{action.value}:{rule}"
    return f"guest:{key}" if guest else key
