"""What if: two postmortems of the same capture, made with two rule sets (A and B), compared."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from healer.report._doc import Block, Cell, Code, Heading, Inline, Items, Para, Table, code_at
from healer.report._format import counts, dur, iso, plural, rel, secs, times
from healer.report.html import to_html
from healer.report.markdown import to_markdown
from healer.report.results import Action, Circuit, Incident, Postmortem

__all__ = ["what_if", "what_if_html"]

_A, _B = "A", "B"
_ACTION_WORDS = {
    "respawn_virtiofsd": "respawns virtiofsd",
    "ensure_virtiofsd": "makes sure virtiofsd listens",
    "readd_fs": "re-adds the fs device",
    "remount_guest": "remounts the share in the guest",
    "open_circuit": "opens the circuit",
    "notify": "notifies operators",
    "restart_vm": "restarts the VM",
}

_Pair = tuple[Incident | None, Incident | None]


def what_if(a: Postmortem, b: Postmortem, *, a_label: str, b_label: str) -> str:
    """Markdown: how B's decisions differ from A's on the same capture, incident by incident."""
    return to_markdown(_blocks(a, b, a_label, b_label))


def what_if_html(a: Postmortem, b: Postmortem, *, a_label: str, b_label: str) -> str:
    """:func:`what_if` as an HTML ``<section>``, for ``render_html(..., appendix=...)``."""
    return f"<section>\n{to_html(_blocks(a, b, a_label, b_label))}</section>\n"


def _match(a: Postmortem, b: Postmortem) -> list[_Pair]:
    """Pair incidents: same first-failure line, else same share with overlapping time."""
    pairs: list[_Pair] = []
    free_b = list(b.incidents)
    left: list[Incident] = []
    for x in a.incidents:
        key = (x.first_failure.source, x.first_failure.line)
        same = next(
            (y for y in free_b if (y.first_failure.source, y.first_failure.line) == key), None
        )
        if same is None:
            left.append(x)
        else:
            free_b.remove(same)
            pairs.append((x, same))
    for x in left:
        overlapping = [
            y for y in free_b if y.share == x.share and y.onset <= x.end and x.onset <= y.end
        ]
        if overlapping:
            y = min(overlapping, key=lambda y: (abs(y.onset - x.onset), y.id))
            free_b.remove(y)
            pairs.append((x, y))
        else:
            pairs.append((x, None))
    pairs += [(None, y) for y in free_b]

    def start(pair: _Pair) -> tuple[float, str]:
        found = [i for i in pair if i is not None]
        return min(i.onset for i in found), found[0].id

    return sorted(pairs, key=start)


# --- small helpers -----------------------------------------------------------------


class _Timed(Protocol):
    @property
    def time(self) -> float: ...


def _time(moment: _Timed | None) -> float | None:
    return moment.time if moment else None


def _circuit(i: Incident) -> Circuit | None:
    """The incident's first circuit opening."""
    return i.circuits[0] if i.circuits else None


def _both(x: Sequence[tuple[str, int]], y: Sequence[tuple[str, int]]) -> list[tuple[str, int, int]]:
    """Per name of either side, in order: its count in ``x`` and in ``y``."""
    dx, dy = dict(x), dict(y)
    return [(name, dx.get(name, 0), dy.get(name, 0)) for name in sorted(set(dx) | set(dy))]


def _suppressed_total(pm: Postmortem) -> int:
    return sum(n for _, n in pm.suppressed)


def _decides(i: Incident, base: float) -> str:
    firsts = dict(i.first_action_at)
    parts = [
        f"{action} {times(n)} (first {rel(firsts[action], base)} after the first failure)"
        for action, n in i.would_run
    ]
    parts += [f"{action} suppressed {times(n)}" for action, n in i.suppressed]
    return "; ".join(parts) or "nothing"


def _when(action: Action | None, base: float) -> str:
    if action is None:
        return "never"
    return f"{action.action} {rel(action.time, base)} after the first failure (rule {action.rule})"


def _earlier(ta: float | None, tb: float | None, verb: str) -> str:
    if ta is None or tb is None or ta == tb:
        return ""
    first, second = (_A, _B) if ta < tb else (_B, _A)
    return f" {first} {verb} {abs(round(tb - ta, 6)):.3f} s before {second}."


def _suppressed(i: Incident) -> str:
    if not i.suppressed:
        return "suppresses nothing"
    why = f" ({counts(i.suppressed_reasons)})" if i.suppressed_reasons else ""
    return f"suppresses {counts(i.suppressed)}{why}"


def _recovery(i: Incident, base: float) -> str:
    if i.recovered_at is None:
        return "not recovered before the end of the log"
    return (
        f"recovered at {iso(i.recovered_at)} ({i.recovered_by}, "
        f"{rel(i.recovered_at, base)} after the first failure)"
    )


# --- one matched incident ----------------------------------------------------------


def _differences(x: Incident, y: Incident) -> list[str]:
    """Plain-words differences between the decisions of one incident in A and in B."""
    base = min(x.onset, y.onset)
    out: list[str] = []
    if x.first_failure.where != y.first_failure.where:
        early, late = (x, y) if x.onset <= y.onset else (y, x)
        e_lbl, l_lbl = (_A, _B) if early is x else (_B, _A)
        out.append(
            f"{e_lbl}'s incident opens on {early.first_failure.kind} at "
            f"{early.first_failure.where} (rule {early.opened_by}); {l_lbl}'s only on "
            f"{late.first_failure.kind} at {late.first_failure.where} (rule {late.opened_by}), "
            f"{rel(late.onset, early.onset)} later."
        )
    xd, yd = x.detected, y.detected
    if _time(xd) != _time(yd):
        out.append(_first("First decision", xd, yd, base, "decides"))
    xh, yh = x.first_heal, y.first_heal
    if _time(xh) != _time(yh) or (xh and yh and xh.action != yh.action):
        out.append(_first("First healing decision", xh, yh, base, "starts healing"))
    out += _action_differences(x, y, base)
    out += _circuit_differences(x, y, base)
    if dict(x.suppressed) != dict(y.suppressed):
        out.append(f"Suppressed: {_A} {_suppressed(x)}; {_B} {_suppressed(y)}.")
    if x.recovered_at != y.recovered_at:
        out.append(f"Recovery: {_A} {_recovery(x, base)}; {_B} {_recovery(y, base)}.")
    return out


def _first(moment: str, xa: Action | None, ya: Action | None, base: float, verb: str) -> str:
    return f"{moment}: {_A} {_when(xa, base)}, {_B} {_when(ya, base)}." + _earlier(
        _time(xa), _time(ya), verb
    )


def _action_differences(x: Incident, y: Incident, base: float) -> list[str]:
    out: list[str] = []
    xf, yf = dict(x.first_action_at), dict(y.first_action_at)
    for action, nx, ny in _both(x.would_run, y.would_run):
        if not (nx and ny):
            one, other, n, first = (_A, _B, nx, xf) if nx else (_B, _A, ny, yf)
            out.append(
                f"{one} {_ACTION_WORDS.get(action, f'decides {action}')} ({action}) "
                f"{rel(first[action], base)} after the first failure"
                f"{'' if n == 1 else f', {n} times in all'}; {other} does not."
            )
        elif nx != ny or xf[action] != yf[action]:
            backoff = ""
            if action == "respawn_virtiofsd" and x.max_delay != y.max_delay:
                backoff = f"; longest backoff {_A} {x.max_delay:.3f} s, {_B} {y.max_delay:.3f} s"
            out.append(
                f"{action}: {_A} {times(nx)} (first {rel(xf[action], base)} after the "
                f"first failure), {_B} {times(ny)} (first {rel(yf[action], base)}){backoff}."
            )
    return out


def _circuit_differences(x: Incident, y: Incident, base: float) -> list[str]:
    cx, cy = _circuit(x), _circuit(y)
    if cx is not None and cy is not None:
        if cx.time == cy.time and cx.rule == cy.rule:
            return []
        text = (
            f"The circuit would open in {_A} at {iso(cx.time)} ({rel(cx.time, base)} after "
            f"the first failure, rule {cx.rule}) and in {_B} at {iso(cy.time)} "
            f"({rel(cy.time, base)}, rule {cy.rule})."
        )
        return [text + _earlier(cx.time, cy.time, "opens it")]
    for c, one, other in ((cx, _A, _B), (cy, _B, _A)):
        if c is not None:
            return [
                f"{one}: the circuit would open at {iso(c.time)} ({rel(c.time, base)} after "
                f"the first failure, rule {c.rule}, caused at {c.where}); {other}: never."
            ]
    return []


def _only(i: Incident, who: str, other: str) -> str:
    ff = i.first_failure
    recovery = (
        f"; recovered {dur(i.ttr)} after the first failure ({i.recovered_by})"
        if i.recovered
        else "; not recovered before the end of the log"
    )
    c = _circuit(i)
    circuit = (
        f"; the circuit would open at {iso(c.time)} "
        f"({rel(c.time, i.onset)} after the first failure, rule {c.rule})"
        if c
        else ""
    )
    return (
        f"Only {who} opens an incident here ({i.id}, share {i.share}, rule {i.opened_by}): "
        f"first failure {ff.kind} at {ff.where}, {iso(i.onset)}. {who} decides "
        f"{_decides(i, i.onset)}{circuit}{recovery}. {other} makes no decision for it."
    )


# --- the whole capture -------------------------------------------------------------


def _total_rows(a: Postmortem, b: Postmortem) -> tuple[tuple[Cell, ...], ...]:
    rows: list[tuple[Cell, ...]] = [
        ("Incidents", str(a.incidents_total), str(b.incidents_total)),
        ("Recovered", str(a.recovered_total), str(b.recovered_total)),
        ("Not recovered", str(a.not_recovered), str(b.not_recovered)),
        ("Circuits opened", str(a.circuits_opened), str(b.circuits_opened)),
    ]
    rows += [
        ((Code(action), " would run"), str(na), str(nb))
        for action, na, nb in _both(a.would_run, b.would_run)
    ]
    suppressed = [
        f"{n} ({counts(pm.suppressed_reasons)})" if n else "0"
        for pm, n in ((a, _suppressed_total(a)), (b, _suppressed_total(b)))
    ]
    rows.append(("Suppressed actions", *suppressed))
    rows.append(("Mean TTD", secs(a.ttd.mean), secs(b.ttd.mean)))
    rows.append(("Mean TTR", secs(a.ttr.mean), secs(b.ttr.mean)))
    return tuple(rows)


def _verdict(a: Postmortem, b: Postmortem, pairs: Sequence[_Pair]) -> list[tuple[Inline, ...]]:
    """The differences an operator weighs first: incidents, healing, circuits, actions."""
    out: list[tuple[Inline, ...]] = []
    only_a = sum(1 for _, y in pairs if y is None)
    only_b = sum(1 for x, _ in pairs if x is None)
    if a.incidents_total != b.incidents_total or only_a or only_b:
        extra = [f"{n} only with {who}" for n, who in ((only_a, _A), (only_b, _B)) if n]
        out.append(
            (
                f"Incidents: {_A} {a.incidents_total}, {_B} {b.incidents_total}"
                + (f" ({', '.join(extra)})" if extra else "")
                + ".",
            )
        )
    matched = [(x, y) for x, y in pairs if x is not None and y is not None]
    heal = [(x.first_heal, y.first_heal) for x, y in matched]
    out += _compare_times(heal, "starts healing", "heals")
    circuits = [(_circuit(x), _circuit(y)) for x, y in matched]
    out += _compare_times(circuits, "opens the circuit", "opens one")
    if a.circuits_opened != b.circuits_opened:
        out.append((f"Circuits opened: {_A} {a.circuits_opened}, {_B} {b.circuits_opened}.",))
    for action, na, nb in _both(a.would_run, b.would_run):
        if na != nb:
            out.append((Code(action), f": {_A} would run it {times(na)}, {_B} {times(nb)}."))
    asup, bsup = _suppressed_total(a), _suppressed_total(b)
    if asup != bsup:
        out.append((f"Suppressed actions: {_A} {asup}, {_B} {bsup}.",))
    return out


def _compare_times(
    pairs: Sequence[tuple[_Timed | None, _Timed | None]], verb: str, short: str
) -> list[tuple[Inline, ...]]:
    """Count matched incidents where B does something later, earlier, only, or never."""
    later = [y.time - x.time for x, y in pairs if x and y and y.time > x.time]
    earlier = [x.time - y.time for x, y in pairs if x and y and y.time < x.time]
    only_a = sum(1 for x, y in pairs if x and not y)
    only_b = sum(1 for x, y in pairs if y and not x)
    out: list[tuple[Inline, ...]] = [
        (
            f"{_B} {verb} {word} than {_A} in {plural(len(by), 'incident')} "
            f"(by up to {max(by):.3f} s).",
        )
        for by, word in ((later, "later"), (earlier, "earlier"))
        if by
    ]
    out += [
        (f"{never} never {verb} in {plural(n, 'incident')} where {does} {short}.",)
        for n, never, does in ((only_a, _B, _A), (only_b, _A, _B))
        if n
    ]
    return out


def _blocks(a: Postmortem, b: Postmortem, a_label: str, b_label: str) -> list[Block]:
    pairs = _match(a, b)
    blocks: list[Block] = [
        Heading(2, ("What if: the same capture under two rule sets",)),
        Items((("A = ", Code(a_label)), ("B = ", Code(b_label)))),
        Para(
            (
                "Both rule sets saw exactly the same events. Times are event times; "
                "'after the first failure' counts from the earlier onset of the two. "
                "Incidents are matched by their first failure line, else by share and "
                "overlapping time.",
            )
        ),
        Heading(3, ("Totals",)),
        Table(("", f"A: {a_label}", f"B: {b_label}"), _total_rows(a, b)),
        Heading(3, ("What changes if you switch from A to B",)),
    ]
    verdict = _verdict(a, b, pairs)
    same = sum(1 for x, y in pairs if x and y and not _differences(x, y))
    if not verdict and same == len(pairs):
        blocks.append(
            Para(
                (
                    "Nothing, for this capture: both rule sets make the same decisions at "
                    "the same times. Rules that this log does not exercise may still differ.",
                )
            )
        )
    else:
        if same:
            verdict.append((f"{plural(same, 'incident')} with the same decisions in both.",))
        blocks.append(Items(tuple(verdict)))
    blocks.append(Heading(3, ("Incident by incident",)))
    if not pairs:
        blocks.append(Para(("Neither rule set opened an incident.",)))
    for n, (x, y) in enumerate(pairs, 1):
        blocks += _pair_blocks(n, x, y)
    hidden = max(a.incidents_total - len(a.incidents), b.incidents_total - len(b.incidents))
    if hidden:
        blocks.append(
            Para(
                (
                    f"Incidents beyond the detail limit ({a.max_incidents}) are compared "
                    "in the totals only.",
                )
            )
        )
    return blocks


def _pair_blocks(n: int, x: Incident | None, y: Incident | None) -> list[Block]:
    if x is not None and y is not None:
        ff = (x if x.onset <= y.onset else y).first_failure
        names = f"A {x.id}, B {y.id}" if x.id != y.id else x.id
        heading = (f"{n}. {names} (share {x.share}): first failure ", *code_at(ff.kind, ff.where))
        diffs = _differences(x, y)
        return [
            Heading(4, (*heading, f", {iso(min(x.onset, y.onset))}")),
            Items(tuple((d,) for d in diffs))
            if diffs
            else Para((f"Same decisions at the same times: {_decides(x, x.onset)}.",)),
        ]
    i, who, other = (x, _A, _B) if x is not None else (y, _B, _A)
    assert i is not None  # noqa: S101 - a pair has at least one side
    ff = i.first_failure
    heading = (
        f"{n}. only {who}: {i.id} (share {i.share}): first failure ",
        *code_at(ff.kind, ff.where),
    )
    return [Heading(4, (*heading, f", {iso(ff.time)}")), Para((_only(i, who, other),))]
