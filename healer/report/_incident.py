"""One incident's sections: first failure, key times, hints, cascade and action audit."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from healer.report._doc import (
    Block,
    Cell,
    Code,
    Heading,
    Inline,
    Items,
    Para,
    Picture,
    Pre,
    Table,
    code_at,
    joined,
)
from healer.report._format import TIMER, counts, dur, iso, plural, rel, times
from healer.report.results import LEAD_UP_S, Action, Collapsed, Entry, Incident, since

__all__ = ["ACTION_HEAD", "action_row", "incident_blocks", "label"]

ACTION_HEAD = (
    "Decided at",
    "After onset",
    "Idempotency key",
    "Action",
    "Rule",
    "Cause",
    "Not before",
    "After",
    "Outcome",
)


def incident_blocks(i: Incident, *, recorded: bool = False) -> list[Block]:
    """One incident's sections; ``recorded``: its actions ran (a journal as written)."""
    ff = i.first_failure
    outcome = (
        f"recovered {dur(i.ttr)} after the onset ({i.recovered_by} at {i.recovery_where})"
        if i.recovered
        else "not recovered before the end of the log"
    )
    blocks: list[Block] = [
        Heading(2, ("Incident ", Code(i.id), f" (share {i.share})")),
        Para(("Opened by rule ", Code(i.opened_by), f"; {outcome}.")),
        Picture(i),
        Heading(3, ("First failure",)),
        Para(
            (
                *code_at(ff.kind, ff.where),
                f" (byte offset {ff.offset}), {iso(ff.time)}{_untimed(i)}:",
            )
        ),
        Pre(ff.raw or "(the raw line was not kept)"),
        *_key_times(i, recorded=recorded),
    ]
    if i.hints:
        blocks.append(Heading(3, ("Contributing factors (hints from the log)",)))
        blocks.append(Items(tuple((h,) for h in i.hints)))
    return blocks + _cascade(i) + _actions(i, recorded=recorded)


def _untimed(i: Incident) -> str:
    if i.first_failure.time is not None:
        return ""
    if not i.clock_known:
        return " (no line up to here has a time: durations are unknown)"
    return f" (the line has no time; the last time before it, {iso(i.first_failure.at)}, is used)"


def _key_times(i: Incident, *, recorded: bool) -> list[Block]:
    def after(t: float | None) -> str:
        return dur(since(i.clock_known, i.onset, t))

    def decided(moment: str, a: Action | None, suffix: str, nothing: str) -> tuple[Cell, ...]:
        if a is None:
            return (moment, "-", "never", "-", nothing)
        what = (Code(a.action), " by rule ", Code(a.rule))
        return (moment, iso(a.time), after(a.time) + suffix, (Code(a.where),), what)

    ff = i.first_failure
    rows: list[tuple[Cell, ...]] = []
    if i.began is not None:  # a line says the fault began before the first failure's line
        rows.append(("Onset (as a line reports it)", iso(i.began.time), "0.000 s",
                     (Code(i.began.where),), i.began.why))  # fmt: skip
        rows.append(("First failure", iso(ff.time), after(ff.time), (Code(ff.where),), ff.kind))
    else:
        rows.append(("Onset (first failure)", iso(ff.time), "0.000 s", (Code(ff.where),), ff.kind))
    rows += [
        decided("Detection (first decision)", i.detected, " (TTD)", "no rule decided anything"),
        decided(
            "First healing decision",
            i.first_heal,
            "",
            "no healing action was decided" if recorded else "no healing action would run",
        ),
    ]
    rows += [
        ("Circuit opened", iso(c.time), after(c.time), (Code(c.where),), c.rule) for c in i.circuits
    ]
    if i.recovered:
        rows.append(
            (
                "Recovery",
                iso(i.recovered_at),
                f"{after(i.recovered_at)} (TTR)",
                (Code(i.recovery_where or "-"),),
                i.recovered_by or "-",
            )
        )
    else:
        recovery = "not recovered before the end of the log"
        rows.append(("Recovery", recovery, f"last entry at {after(i.last_seen)}", "-", "-"))
    return [
        Heading(3, ("Key times",)),
        Table(("Moment", "Time (UTC)", "After onset", "Source", "What"), tuple(rows)),
    ]


# --- the cascade -------------------------------------------------------------------


@dataclass(slots=True)
class _Step:
    kind: str  # "" for decisions without a new event (timers)
    first: Entry
    last: Entry
    count: int
    responses: list[tuple[Inline, ...]]
    signature: list[str]


def _decided(what: str) -> tuple[str, bool]:
    """A decision row's ``what`` (``→ x``, ``→ x (suppressed)``): the action, suppressed?"""
    return what.removeprefix("→ ").removesuffix(" (suppressed)"), what.endswith("(suppressed)")


def label(what: str) -> str:
    """A row's ``what`` in words: ``→ x (suppressed)`` reads ``x suppressed``."""
    if not what.startswith("→ "):
        return what
    action, suppressed = _decided(what)
    return f"{action} {'suppressed' if suppressed else 'decided'}"


def _response(e: Entry) -> tuple[Inline, ...]:
    if e.type == "transition":
        return (e.what,)
    action, suppressed = _decided(e.what)
    return ("suppressed " if suppressed else "decided ", Code(action))


def _steps(entries: Iterable[Entry]) -> list[_Step]:
    steps: list[_Step] = []
    for e in entries:
        if e.type == "event":
            steps.append(_Step(e.what, e, e, 1, [], []))
        elif steps and steps[-1].count == 1 and steps[-1].first.where == e.where:
            steps[-1].responses.append(_response(e))
            steps[-1].signature.append(e.what)
        else:
            steps.append(_Step("", e, e, 1, [_response(e)], [e.what]))
    merged: list[_Step] = []
    for step in steps:
        prev = merged[-1] if merged else None
        if prev and step.kind and prev.kind == step.kind and prev.signature == step.signature:
            prev.count += 1
            prev.last = step.first
        else:
            merged.append(step)
    return merged


def _step_item(step: _Step, first_where: str, *, folded: bool = False) -> tuple[Inline, ...]:
    e = step.first
    parts: list[Inline] = [f"{iso(e.time)} "]
    if step.kind:
        parts += code_at(step.kind, e.where)
        if step.count > 1:
            parts += [
                f" {times(step.count)}, until {iso(step.last.time)} at ",
                Code(step.last.where),
            ]
        if e.where == first_where and e.type == "event":
            parts.append(" (first failure)")
    elif folded and e.where != TIMER:
        parts += ["the event at ", Code(e.where), " (folded above)"]
    else:
        parts += ["no new event; cause ", Code(e.where)]
    parts.append(": ")
    parts += joined(step.responses) if step.responses else ("nothing decided",)
    if step.count > 1 and step.responses:
        parts.append(" (each time)")
    return tuple(parts)


def collapsed_item(runs: Sequence[Collapsed]) -> tuple[Inline, ...]:
    first = min(r.first for r in runs)
    last = max(r.last for r in runs)
    what = "; ".join(f"{label(r.what)} {times(r.count)}" for r in runs)
    return (f"… folded to bound the report, between {iso(first)} and {iso(last)}: {what}",)


def _cascade(i: Incident) -> list[Block]:
    blocks: list[Block] = []
    if i.lead_up:
        blocks += [
            Heading(3, ("Before the onset",)),
            Para(
                (
                    f"Events of share {i.share} in the {LEAD_UP_S:g} s before the first "
                    "failure (context; no rule opened an incident for them):",
                )
            ),
            Items(
                tuple(
                    (f"{iso(e.time)} ", *code_at(e.what, e.where), f": {e.detail}")
                    for e in i.lead_up
                )
            ),
        ]
    where = i.first_failure.where
    items = [_step_item(s, where) for s in _steps(i.entries)]
    if i.collapsed:
        items.append(collapsed_item(i.collapsed))
    for n, step in enumerate(_steps(i.tail)):
        items.append(_step_item(step, where, folded=n == 0 and bool(i.collapsed)))
    return [
        *blocks,
        Heading(3, ("Cascade",)),
        Para(
            (
                "The incident's events in order, each with what the rules decided on it "
                "(repeats of the same event and decisions are merged):",
            )
        ),
        Items(tuple(items), ordered=True),
    ]


# --- the action audit --------------------------------------------------------------


def action_row(a: Action, onset: float | None) -> tuple[Cell, ...]:
    wait = f"{iso(a.not_before)} (+{a.delay:.3f} s)" if a.delay > 0 else "at once"
    return (
        iso(a.time),
        "-" if onset is None else rel(a.time, onset),
        Code(a.key),
        Code(a.action),
        Code(a.rule),
        (Code(a.where),) + ((f" {a.cause_kind}",) if a.cause_kind else ()),
        wait,
        Code(a.after) if a.after else "-",
        a.result,
    )


def _actions(i: Incident, *, recorded: bool) -> list[Block]:
    if not i.decisions:
        return [Heading(3, ("Actions",)), Para(("No decision in this incident.",))]
    ran = (
        f"decided {counts(i.would_run)} (outcomes: {counts(i.outcomes)})"
        if recorded
        else f"would run {counts(i.would_run)}"
    )
    summary = (
        f"{plural(i.decisions, 'decision')}: {ran}; "
        f"suppressed {counts(i.suppressed)}"
        + (f" ({counts(i.suppressed_reasons)})" if i.suppressed_reasons else "")
        + (f"; longest backoff {i.max_delay:.3f} s" if i.max_delay > 0 else "")
        + ". The idempotency key names one action of one incident: an executor "
        "runs each key at most once, also across restarts."
    )
    rows = [action_row(a, i.onset) for a in i.actions]
    if i.actions_collapsed:
        rows.append(("…", "", "", collapsed_item(i.actions_collapsed), *[""] * 5))
    rows += [action_row(a, i.onset) for a in i.actions_tail]
    return [Heading(3, ("Actions",)), Para((summary,)), Table(ACTION_HEAD, tuple(rows))]
