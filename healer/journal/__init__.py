"""The journal: typed records (records.py), their append-only store (store.py), and
the lock that keeps one healer per journal (lock.py)."""

from healer.journal.lock import JournalBusy, JournalLock
from healer.journal.records import (
    DecisionRecord,
    EventRecord,
    NoteRecord,
    OperatorRecord,
    OutcomeRecord,
    PositionRecord,
    Record,
    RecordError,
    Snapshot,
    StartRecord,
    TickRecord,
    TransitionRecord,
)
from healer.journal.store import Journal, JournalCorrupt, Recovered, read_records, read_segment

__all__ = [
    "DecisionRecord",
    "EventRecord",
    "Journal",
    "JournalBusy",
    "JournalCorrupt",
    "JournalLock",
    "NoteRecord",
    "OperatorRecord",
    "OutcomeRecord",
    "PositionRecord",
    "Record",
    "RecordError",
    "Recovered",
    "Snapshot",
    "StartRecord",
    "TickRecord",
    "TransitionRecord",
    "read_records",
    "read_segment",
]
