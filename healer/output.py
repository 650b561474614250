"""How replayed events are printed: JSON lines for machines, a table for people."""

from __future__ import annotations

import math
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import orjson

from healer.engine.model import Decision, Transition
from healer.events import Event, to_dict
from healer.journal.records import output_to_dict
from healer.parse import ClockNote, Repeat
from healer.timeline import Outcome, TimelineItem

__all__ = ["Printable", "iso_time", "jsonl_dict", "jsonl_line", "table_header", "table_line"]

Printable = TimelineItem

_SUMMARY_WIDTH = 110


def jsonl_line(item: Printable, *, recorded: bool = False) -> bytes:
    """One JSON object (:func:`jsonl_dict`) and a newline."""
    return orjson.dumps(jsonl_dict(item, recorded=recorded)) + b"\n"


def jsonl_dict(item: Printable, *, recorded: bool = False) -> dict[str, Any]:
    """The JSON object of one item, ``"type"`` first: ``event``, ``decision``,
    ``transition``, ``outcome``, ``clock`` (what a source's clocks said of each
    other: a zone learned, a disagreement), ``repeat`` (a record of a fault an earlier event of
    its source gave: its ``kind``, ``of_line`` and ``why``) or ``unrecognized`` (a
    record no parser knew, ``"kind": null``).

    Every time is an ISO 8601 UTC string (``...Z``) or null: an event's as parsed, a
    decision's ``time`` and ``not_before``, a transition's ``time`` and a cause's
    ``time``, made from the engine's epoch seconds. An outcome has no time (the
    journal keeps none). A decision this replay made has ``"would_run": true`` (false
    when suppressed); a ``recorded`` one (a journal read as it was written) has no
    such guess: its outcomes follow as their own lines.
    """
    if isinstance(item, Event):
        return {"type": "event", **to_dict(item)}
    if isinstance(item, Decision | Transition):
        data = _output_dict(item)
        if isinstance(item, Decision) and not recorded:
            data["would_run"] = item.suppressed is None
        return data
    if isinstance(item, Outcome):
        return _outcome_dict(item)
    if isinstance(item, ClockNote):
        return {"type": "clock", **asdict(item)}
    if isinstance(item, Repeat):
        return {
            "type": "repeat",
            "kind": item.kind,
            "source": item.source,
            "offset": item.offset,
            "line": item.line,
            "of_line": item.of_line,
            "why": item.why,
            "raw": item.text,
        }
    return {
        "type": "unrecognized",
        "kind": None,
        "source": item.source,
        "offset": item.offset,
        "line": item.line,
        "raw": item.text,
    }


def _output_dict(item: Decision | Transition) -> dict[str, Any]:
    """The journal's form of a decision or transition with its epoch times as ISO 8601."""
    data = output_to_dict(item)
    out: dict[str, Any] = {"type": data.pop("type"), **data}
    for name in ("time", "not_before"):
        if name in out:
            out[name] = iso_time(out[name])
    if out.get("cause") is not None:
        out["cause"] = {**out["cause"], "time": iso_time(out["cause"]["time"])}
    return out


def iso_time(seconds: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with a ``Z``, like an event's time; null if unknown."""
    if seconds is None or not math.isfinite(seconds):
        return None
    return _epoch(seconds)


def table_header() -> str:
    return f"{'TIME':<27} {'SOURCE:LINE':<30} {'LEVEL':<5} {'KIND':<28} DETAILS"


def table_line(item: Printable, *, recorded: bool = False) -> str:
    """A fixed-width timeline row; the details show the fields that are set.

    ``recorded``: the decisions come from a journal, so they read "decided" (their
    outcomes are rows of their own, ``<-``) instead of "would run".
    """
    if isinstance(item, Decision):
        what = f"-> {item.action}"
        status = (
            f"suppressed: {item.suppressed}"
            if item.suppressed
            else ("decided" if recorded else "would run")
        )
        delay = item.not_before - item.time
        wait = f" after {delay:.3f} s" if delay > 0 else ""
        where = _where(item.cause.source, item.cause.line) if item.cause else "(timer)"
        details = f"{status}{wait} share={item.share} rule={item.rule} key={item.key}"
        return f"{_epoch(item.time):<27} {where:<30} {'':<5} {what:<28} {details}"
    if isinstance(item, Transition):
        what = f"== {item.after}"
        where = _where(item.cause.source, item.cause.line) if item.cause else "(timer)"
        details = (
            f"share={item.share} {item.incident}: {item.before} -> {item.after} ({item.reason})"
        )
        return f"{_epoch(item.time):<27} {where:<30} {'':<5} {what:<28} {details}"
    if isinstance(item, Outcome):
        return _outcome_line(item)
    if isinstance(item, ClockNote):
        where = _where(item.source, item.line)
        return f"{'':<27} {where:<30} {'':<5} {'(clock)':<28} {item.text[:_SUMMARY_WIDTH]}"
    if isinstance(item, Repeat):
        where = _where(item.source, item.line)
        what = f"(repeats line {item.of_line})"
        return f"{'':<27} {where:<30} {'':<5} {what:<28} {item.kind} ({item.why})"
    if not isinstance(item, Event):
        where = _where(item.source, item.line)
        text = item.text.splitlines()[0] if item.text else ""
        return f"{'':<27} {where:<30} {'':<5} {'(not recognised)':<28} {text[:_SUMMARY_WIDTH]}"
    data = to_dict(item)
    time = data["time"] or "-"
    details = _details(data["fields"])
    if item.share:
        details = f"share={item.share} {details}".rstrip()
    where = _where(item.source, item.line)
    return f"{time:<27} {where:<30} {item.level:<5} {item.kind:<28} {details[:_SUMMARY_WIDTH]}"


def _outcome_dict(item: Outcome) -> dict[str, Any]:
    decision = item.decision
    return {
        "type": "outcome",
        "key": item.key,
        "status": item.status,
        "detail": item.detail,
        "action": decision.action if decision else None,
        "share": decision.share if decision else None,
        "incident": decision.incident if decision else None,
    }


def _outcome_line(item: Outcome) -> str:
    """The journal keeps no time for an outcome: the row cites its decision's cause."""
    decision = item.decision
    cause = decision.cause if decision else None
    where = _where(cause.source, cause.line) if cause else "(timer)" if decision else "-"
    what = f"<- {decision.action}" if decision else "<- (decision not in journal)"
    status = item.status + (f": {item.detail}" if item.detail else "")
    share = f" share={decision.share}" if decision else ""
    details = f"{status}{share} key={item.key}"
    return f"{'':<27} {where:<30} {'':<5} {what:<28} {details[:_SUMMARY_WIDTH]}"


def _epoch(seconds: float) -> str:
    stamp = datetime.fromtimestamp(seconds, UTC).isoformat()
    return stamp.replace("+00:00", "Z")


def _where(source: str, line: int) -> str:
    text = f"{source}:{line}"
    return text if len(text) <= 30 else "…" + text[-29:]


def _details(fields: dict[str, Any]) -> str:
    parts = []
    for name, value in fields.items():
        if value in (None, "", [], {}, False) or name in ("tag", "socket"):
            continue
        shown = ">".join(str(v) for v in value) if isinstance(value, list) else value
        parts.append(f"{name}={shown}")
    return " ".join(parts)
