"""An incident as a picture: an inline SVG timeline for the HTML report.

Lanes, top to bottom: the share's phase as coloured bands (one per phase change the
report lists), one lane per source with a mark per event, and the decisions with
their outcomes. A mark is filled when the line carried its own time and hollow when
it had none (it is placed at the last time known before it): the clock each time came
from. Every mark has a ``<title>`` (its time, ``source:line`` and what it was). Pure:
text in, text out; everything from the log is escaped.
"""

from __future__ import annotations

import html
from collections.abc import Callable

from healer.engine.model import Status
from healer.report._format import iso
from healer.report.results import Action, Entry, Incident

__all__ = ["MAX_SOURCE_LANES", "PHASE_COLOURS", "incident_svg"]

PHASE_COLOURS = {
    "healthy": "#2e7d32",
    "failing": "#c62828",
    "recovering": "#f9a825",
    "circuit-open": "#6a1b9a",
}
OUTCOME_COLOURS = {Status.SUCCEEDED: "#2e7d32", Status.FAILED: "#c62828"}
MAX_SOURCE_LANES = 8  # more sources share the last lane
_WIDTH, _LEFT, _RIGHT, _LANE, _TOP = 960, 170, 20, 26, 10


def incident_svg(incident: Incident) -> str:
    """The incident's timeline as one ``<svg>`` element (scales to the page width)."""
    rows = [*incident.lead_up, *incident.entries, *incident.tail]
    actions = [*incident.actions, *incident.actions_tail]
    moments = [incident.onset, *(r.at for r in rows), *(a.time for a in actions)]
    if incident.recovered_at is not None:
        moments.append(incident.recovered_at)
    start, end = min(moments), max(moments)
    span = end - start if end - start > 1e-9 else 1.0
    plot = _WIDTH - _LEFT - _RIGHT

    def x(t: float) -> float:
        return _LEFT + (t - start) / span * plot

    sources = list(dict.fromkeys(_source(r) for r in rows if r.type == "event"))
    many = len(sources) > MAX_SOURCE_LANES - 1
    shown = sources[: MAX_SOURCE_LANES - 1] + (["(other sources)"] if many else [])
    lanes = ["phase", *shown, "decisions"]
    height = _TOP + _LANE * len(lanes) + 34
    out = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} '
        f'{height}" width="{_WIDTH}" height="{height}" role="img" '
        f'aria-label="timeline of incident {_e(incident.id)}">',
        f"<title>incident {_e(incident.id)} of share {_e(incident.share)}</title>",
    ]
    for n, name in enumerate(lanes):
        y = _TOP + n * _LANE
        out.append(
            f'<text x="4" y="{y + 17}" font-size="12" fill="#333">{_e(name[:26])}</text>'
            f'<line x1="{_LEFT}" y1="{y + _LANE - 1}" x2="{_WIDTH - _RIGHT}" '
            f'y2="{y + _LANE - 1}" stroke="#e0e0e0"/>'
        )
    out += _bands(rows, x, end)
    for row in rows:
        if row.type != "event":
            continue
        lane = 1 + (shown.index(_source(row)) if _source(row) in shown else len(shown) - 1)
        cy = _TOP + lane * _LANE + _LANE / 2
        fill = "#1565c0" if row.time is not None else "#fff"
        clock = "its own time" if row.time is not None else "no time of its own: the last before"
        out.append(
            f'<circle class="event" cx="{x(row.at):.1f}" cy="{cy:.1f}" r="4.5" fill="{fill}" '
            f'stroke="#1565c0" stroke-width="1.5"><title>{_e(iso(row.at))} '
            f"{_e(row.where)} {_e(row.what)} ({clock})</title></circle>"
        )
    lane_y = _TOP + (len(lanes) - 1) * _LANE
    for action in actions:
        out.append(_decision(action, x(action.time), lane_y))
    axis = _TOP + len(lanes) * _LANE + 14
    out.append(
        f'<text x="{_LEFT}" y="{axis}" font-size="11" fill="#333">{_e(iso(start))}</text>'
        f'<text x="{_WIDTH - _RIGHT}" y="{axis}" font-size="11" fill="#333" '
        f'text-anchor="end">+{span:.3f} s</text>'
        f'<text x="{_LEFT}" y="{axis + 14}" font-size="10" fill="#555">filled: the line\'s '
        "own time; hollow: none, placed at the last time before it; triangles: decisions "
        "(green succeeded, red failed, grey no outcome)</text>"
    )
    out.append("</svg>")
    return "".join(out)


def _bands(rows: list[Entry], x: Callable[[float], float], end: float) -> list[str]:
    changes = sorted((r for r in rows if r.type == "transition"), key=lambda r: (r.at, r.seq))
    out = []
    for n, row in enumerate(changes):
        after = row.what.rsplit(" ", 1)[-1]
        until = changes[n + 1].at if n + 1 < len(changes) else end
        left, right = x(row.at), x(until)
        colour = PHASE_COLOURS.get(after, "#9e9e9e")
        out.append(
            f'<rect class="band" data-phase="{_e(after)}" x="{left:.1f}" y="{_TOP + 4}" '
            f'width="{max(right - left, 2.0):.1f}" height="{_LANE - 8}" fill="{colour}">'
            f"<title>{_e(iso(row.at))} {_e(row.what)}: {_e(row.detail)}</title></rect>"
        )
    return out


def _decision(action: Action, cx: float, lane_y: float) -> str:
    colour = OUTCOME_COLOURS.get(action.outcome, "#9e9e9e") if action.outcome else "#9e9e9e"
    if action.suppressed:
        colour = "#bdbdbd"
    top, bottom = lane_y + 6, lane_y + _LANE - 6
    what = f"{action.action} (rule {action.rule})"
    result = action.outcome.value if action.outcome else (action.suppressed or "no outcome")
    return (
        f'<path class="decision" d="M{cx:.1f},{top} L{cx + 5:.1f},{bottom} L{cx - 5:.1f},'
        f'{bottom} Z" fill="{colour}"><title>{_e(iso(action.time))} {_e(what)}: '
        f"{_e(result)}</title></path>"
    )


def _source(row: Entry) -> str:
    return row.where.rsplit(":", 1)[0]


def _e(text: str) -> str:
    return html.escape(text, quote=True)
