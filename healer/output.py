"""How replayed events are printed: JSON lines for machines, a table for people."""

from __future__ import annotations

from typing import Any

import orjson

from healer.events import Event, to_dict
from healer.parse import Unrecognized

__all__ = ["jsonl_line", "table_header", "table_line"]

_SUMMARY_WIDTH = 110


def jsonl_line(item: Event | Unrecognized) -> bytes:
    """One JSON object and a newline; unknown records get ``"kind": null``."""
    if isinstance(item, Event):
        return orjson.dumps(to_dict(item)) + b"\n"
    record = {
        "kind": None,
        "source": item.source,
        "offset": item.offset,
        "line": item.line,
        "raw": item.text,
    }
    return orjson.dumps(record) + b"\n"


def table_header() -> str:
    return f"{'TIME':<27} {'SOURCE:LINE':<30} {'LEVEL':<5} {'KIND':<28} DETAILS"


def table_line(item: Event | Unrecognized) -> str:
    """A fixed-width timeline row; the details show the fields that are set."""
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
