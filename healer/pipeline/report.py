"""A replay's result as a document: its postmortem, and the what-if comparison if any.

Rendering is pure (:mod:`healer.report`); the caller writes the text where it wants.
The header names the rules behind the decisions: the replay's, or for a journal the
digests it was written under, and both when its events were decided again.
"""

from __future__ import annotations

from healer.pipeline.results import ReplayResult

__all__ = ["redecision_note", "render_report"]


def render_report(
    result: ReplayResult,
    *,
    html: bool = False,
    a_label: str | None = None,
    b_label: str | None = None,
) -> str:
    """Markdown (or a self-contained HTML page) of ``result``'s postmortem.

    ``a_label`` and ``b_label`` name the two sides of a what-if comparison; by default
    the rules' digests (or "the journal as recorded").
    """
    from healer.report import (  # noqa: PLC0415 - the renderers only when a report is made
        render_html,
        render_markdown,
        what_if,
        what_if_html,
    )

    pm = result.postmortem
    if pm is None:
        raise ValueError("the replay collected no postmortem: replay with report=True")
    comparison = ""
    if result.what_if is not None:
        labels = {
            "a_label": a_label or _label_a(result),
            "b_label": b_label or f"rules {result.what_if.rules}",
        }
        compare = what_if_html if html else what_if
        comparison = compare(pm, result.what_if.postmortem, **labels)
    inputs = list(result.inputs)
    if html:
        return render_html(
            pm,
            rules_digest=result.rules,
            inputs=inputs,
            recorded_rules=result.recorded_rules,
            appendix=comparison,
        )
    text = render_markdown(
        pm,
        rules_digest=result.rules,
        inputs=inputs,
        recorded_rules=result.recorded_rules,
    )
    return text + "\n" + comparison if comparison else text


def redecision_note(result: ReplayResult) -> str | None:
    """One line when a journal's events were decided again, under which rules; else None."""
    written = ", then ".join(result.recorded_rules) or "rules its segments do not name"
    if result.redecided:
        return f"re-decided under rules {result.rules}; the journal was written under {written}"
    if result.recorded and result.what_if is not None:
        return (
            f"the what-if re-decided the journal's events under rules {result.what_if.rules}; "
            f"the journal was written under {written}"
        )
    return None


def _label_a(result: ReplayResult) -> str:
    if result.recorded:
        return "the journal as recorded"
    return f"rules {result.rules}"
