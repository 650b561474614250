"""Replay, postmortem and what-if as a library; the command line is a thin shell on it.

``replay_logs`` and ``replay_journal`` (:mod:`healer.pipeline.session`) return a typed
:class:`ReplayResult`; :func:`render_report` turns its postmortem (and what-if
comparison) into Markdown or HTML. ``replay`` and ``decide`` are the streaming parts
underneath: the offline merge of logs by event time, and the rules run over it.
"""

from healer.pipeline.recorded import AsRecorded, JournalTally, journal_records
from healer.pipeline.replay import Input, ReplaySummary, decide, replay
from healer.pipeline.report import redecision_note, render_report
from healer.pipeline.results import JournalCounts, LogCounts, Redecided, ReplayResult, WhatIf
from healer.pipeline.session import Sink, replay_journal, replay_logs

__all__ = [
    "AsRecorded",
    "Input",
    "JournalCounts",
    "JournalTally",
    "LogCounts",
    "Redecided",
    "ReplayResult",
    "ReplaySummary",
    "Sink",
    "WhatIf",
    "decide",
    "journal_records",
    "redecision_note",
    "render_report",
    "replay",
    "replay_journal",
    "replay_logs",
]
