"""Postmortem replay reports: what happened, what healer decided, and when.

A replay yields events, then the decisions and phase changes each caused
(:func:`healer.pipeline.decide`); a journal read as recorded also holds the outcome
of each action (:class:`healer.timeline.Outcome`). :class:`Collector` folds that
stream, one item at a time, into a :class:`Postmortem`; :func:`render_markdown` and
:func:`render_html` turn it into a document, and :func:`what_if` (:func:`what_if_html`)
compares two postmortems of the same capture made with two rule sets.

Everything here is pure: no file I/O and no wall clock. Times are event times from
the logs, so the same input gives byte-identical reports. Memory stays bounded for
huge logs: per-incident lists keep their first and last entries and collapse the
middle into counts, and totals are counters.
"""

from healer.report.collect import Collector
from healer.report.html import render_html
from healer.report.markdown import render_markdown
from healer.report.results import (
    Action,
    Circuit,
    Collapsed,
    Entry,
    FirstFailure,
    Incident,
    Postmortem,
    Stats,
)
from healer.report.whatif import what_if, what_if_html

__all__ = [
    "Action",
    "Circuit",
    "Collapsed",
    "Collector",
    "Entry",
    "FirstFailure",
    "Incident",
    "Postmortem",
    "Stats",
    "render_html",
    "render_markdown",
    "what_if",
    "what_if_html",
]
