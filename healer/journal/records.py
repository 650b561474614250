"""Every kind of journal record as a typed value, and its one encoding.

The journal is the source of truth that a restart folds back into state and that
``healer replay --journal`` reports on, so its records are part of the contract.
Each record kind is a frozen dataclass with a ``version``; :func:`encode` and
:func:`decode` are the only places that know their JSON shape. The shapes are the
ones journals have always had (``{"type": "event", "event": {...}}``), so journals
written by earlier builds read back unchanged; fields added since are optional.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from healer.engine.model import (
    Action,
    Cause,
    Decision,
    EngineState,
    Output,
    Pending,
    Phase,
    ShareState,
    Status,
    Transition,
)
from healer.events import Event, from_dict, to_dict
from healer.parse import Checkpoint
from healer.sources.tailtypes import TailPosition

__all__ = [
    "DecisionRecord",
    "EventRecord",
    "NoteRecord",
    "OperatorRecord",
    "OutcomeRecord",
    "PositionRecord",
    "Record",
    "RecordError",
    "Snapshot",
    "StartRecord",
    "TickRecord",
    "TransitionRecord",
    "decode",
    "decode_snapshot",
    "encode",
    "encode_snapshot",
    "output_from_dict",
    "output_to_dict",
    "state_from_dict",
    "state_to_dict",
]


class RecordError(ValueError):
    """A record that is valid JSON but not a record this build can read."""


_SHAPE_ERRORS = (KeyError, TypeError, ValueError, AttributeError, ArithmeticError, RecursionError)
"""What rebuilding a typed value from damaged JSON can raise (a list where a dict was,
a string where a number was, nesting too deep): each becomes a :class:`RecordError`."""


@dataclass(frozen=True, slots=True)
class EventRecord:
    """An input event, as the engine saw it. ``stream`` names what its offset counts in."""

    version: ClassVar[int] = 1
    event: Event
    stream: str | None = None


@dataclass(frozen=True, slots=True)
class TickRecord:
    """Time passed and a timer fired (journaled only when something was decided)."""

    version: ClassVar[int] = 1
    time: float


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """The engine decided (or suppressed) an action; durable before the action starts."""

    version: ClassVar[int] = 1
    decision: Decision


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """A share changed phase."""

    version: ClassVar[int] = 1
    transition: Transition


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """An action started or ended; ``detail`` says why, in words."""

    version: ClassVar[int] = 1
    key: str
    status: Status
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PositionRecord:
    """Where a source was read up to (journaled with the events read before it)."""

    version: ClassVar[int] = 1
    source: str
    checkpoint: Checkpoint
    tail: TailPosition | None = None


@dataclass(frozen=True, slots=True)
class StartRecord:
    """A process began writing this journal, under these rules."""

    version: ClassVar[int] = 1
    rules: str
    healer: str = ""  # healer's version
    pid: int | None = None
    config: str | None = None  # digest of the configuration (live)


@dataclass(frozen=True, slots=True)
class NoteRecord:
    """Something healer did to its own state that a reader should know about.

    For example: a pending window of a rule that no longer exists was dropped; a
    decision was closed as superseded at start-up.
    """

    version: ClassVar[int] = 1
    what: str
    detail: str = ""
    share: str | None = None


@dataclass(frozen=True, slots=True)
class OperatorRecord:
    """An operator's command to a running healer (who, what, on which share)."""

    version: ClassVar[int] = 1
    command: str
    share: str | None = None
    uid: int | None = None
    pid: int | None = None
    detail: str = ""
    time: float | None = None  # when it was given (pause, resume, reset, restart replay)


Record = (
    EventRecord
    | TickRecord
    | DecisionRecord
    | TransitionRecord
    | OutcomeRecord
    | PositionRecord
    | StartRecord
    | NoteRecord
    | OperatorRecord
)

_TYPES: dict[type[Any], str] = {
    EventRecord: "event",
    TickRecord: "tick",
    DecisionRecord: "decision",
    TransitionRecord: "transition",
    OutcomeRecord: "outcome",
    PositionRecord: "offset",
    StartRecord: "start",
    NoteRecord: "note",
    OperatorRecord: "operator",
}
_VERSIONS = {name: cls.version for cls, name in _TYPES.items()}
DURABLE = frozenset({DecisionRecord, OutcomeRecord, PositionRecord, StartRecord, OperatorRecord})
"""Record kinds that are synced before healer goes on (fsync = "decisions")."""


def type_name(record: Record) -> str:
    return _TYPES[type(record)]


# --- encoding -----------------------------------------------------------------------


def encode(record: Record) -> dict[str, Any]:
    """The JSON-ready form of one record, without the journal's ``seq``."""
    head: dict[str, Any] = {"v": record.version, "type": _TYPES[type(record)]}
    match record:
        case EventRecord(event=event, stream=stream):
            head["event"] = to_dict(event)
            if stream is not None:
                head["stream"] = stream
            return head
        case TickRecord(time=time):
            return head | {"time": time}
        case DecisionRecord(decision=decision):
            return head | _output(decision)
        case TransitionRecord(transition=transition):
            return head | _output(transition)
        case OutcomeRecord():
            return head | {"key": record.key, "status": record.status, "detail": record.detail}
        case PositionRecord(source=source, checkpoint=checkpoint, tail=tail):
            head |= {"source": source, "checkpoint": checkpoint.to_dict()}
            if tail is not None:
                head["tail"] = tail.to_dict()
            return head
        case StartRecord() | NoteRecord() | OperatorRecord():
            return head | asdict(record)
    msg = f"not a journal record: {record!r}"
    raise TypeError(msg)


def decode(data: Mapping[str, Any]) -> Record:
    """One record back from its JSON form; :class:`RecordError` if it is not one."""
    kind = data.get("type")
    version = data.get("v")
    known = _VERSIONS.get(kind) if isinstance(kind, str) else None
    if known is None or not isinstance(kind, str):
        raise RecordError(f"unknown record type {kind!r}")
    if not isinstance(version, int) or not 1 <= version <= known:
        raise RecordError(f"{kind} record version {version!r} is newer than this healer reads")
    try:
        record = _decode(kind, data)
        _check_types(record)
    except _SHAPE_ERRORS as exc:
        raise RecordError(f"damaged {kind} record: {exc!r}") from exc
    return record


def _decode(kind: str, data: Mapping[str, Any]) -> Record:
    if kind == "event":
        return EventRecord(from_dict(data["event"]), data.get("stream"))
    if kind == "tick":
        return TickRecord(float(data["time"]))
    if kind == "decision":
        return DecisionRecord(_decision(data))
    if kind == "transition":
        return TransitionRecord(_transition(data))
    if kind == "outcome":
        return OutcomeRecord(str(data["key"]), Status(data["status"]), str(data.get("detail", "")))
    if kind == "offset":
        tail = data.get("tail")
        return PositionRecord(
            str(data["source"]),
            Checkpoint.from_dict(data["checkpoint"]),
            None if tail is None else TailPosition.from_dict(tail),
        )
    fields = {k: v for k, v in data.items() if k not in ("v", "type", "seq")}
    if kind == "start":
        return StartRecord(**fields)
    if kind == "note":
        return NoteRecord(**fields)
    return OperatorRecord(**fields)


# --- decisions and transitions (also the JSON form replay prints) --------------------


def _output(output: Output) -> dict[str, Any]:
    data = asdict(output)
    data["type"] = "decision" if isinstance(output, Decision) else "transition"
    return data


def output_to_dict(output: Output) -> dict[str, Any]:
    """JSON-ready form of a decision or transition (journal, reports, replay output)."""
    return _output(output)


def output_from_dict(data: Mapping[str, Any]) -> Output:
    """Inverse of :func:`output_to_dict`."""
    return _decision(data) if data["type"] == "decision" else _transition(data)


def _cause(data: Mapping[str, Any] | None) -> Cause | None:
    return Cause(**data) if data else None


def _decision(data: Mapping[str, Any]) -> Decision:
    values = {k: v for k, v in data.items() if k not in ("type", "v", "seq")}
    values["cause"] = _cause(values.get("cause"))
    values["action"] = Action(values["action"])
    return Decision(**values)


def _transition(data: Mapping[str, Any]) -> Transition:
    values = {k: v for k, v in data.items() if k not in ("type", "v", "seq")}
    values["cause"] = _cause(values.get("cause"))
    values["before"] = Phase(values["before"])
    values["after"] = Phase(values["after"])
    return Transition(**values)


# --- engine state and snapshots ------------------------------------------------------


def state_to_dict(state: EngineState) -> dict[str, Any]:
    """JSON-ready engine state, for journal snapshots."""
    return {
        "clock": state.clock if state.clock != float("-inf") else None,
        "inputs": state.inputs,
        "shares": {name: asdict(share) for name, share in state.shares.items()},
        "aliases": state.aliases,
        "windows": {k: list(v) for k, v in state.windows.items()},
        "cooldowns": state.cooldowns,
        "pairs": {k: asdict(v) for k, v in state.pairs.items()},
        "rates": {k: list(v) for k, v in state.rates.items()},
    }


def state_from_dict(data: Mapping[str, Any]) -> EngineState:
    """Inverse of :func:`state_to_dict`."""
    clock = data["clock"]
    return EngineState(
        clock=float("-inf") if clock is None else clock,
        inputs=data["inputs"],
        shares={name: _share_state(share) for name, share in data["shares"].items()},
        aliases=dict(data["aliases"]),
        windows={k: tuple(v) for k, v in data["windows"].items()},
        cooldowns=dict(data["cooldowns"]),
        pairs={k: Pending(v["deadline"], Cause(**v["cause"])) for k, v in data["pairs"].items()},
        rates={k: tuple(v) for k, v in data.get("rates", {}).items()},
    )


def _share_state(data: Mapping[str, Any]) -> ShareState:
    values = dict(data)
    values["phase"] = Phase(values["phase"])
    values["confirm_cause"] = _cause(values.get("confirm_cause"))
    for name in ("dead", "drains", "counted"):
        values[name] = tuple(values.get(name, ()))
    return ShareState(**values)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The folded state at ``seq``: start-up reads it and the records after it."""

    version: ClassVar[int] = 1
    seq: int
    state: EngineState
    rules: str = ""  # the digest of the rules the state was folded under
    checkpoints: dict[str, Checkpoint] = field(default_factory=dict)
    tails: dict[str, TailPosition] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)
    open: tuple[Decision, ...] = ()
    started: tuple[str, ...] = ()


def encode_snapshot(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "v": snapshot.version,
        "seq": snapshot.seq,
        "rules": snapshot.rules,
        "state": state_to_dict(snapshot.state),
        "checkpoints": {s: c.to_dict() for s, c in snapshot.checkpoints.items()},
        "tails": {s: t.to_dict() for s, t in snapshot.tails.items()},
        "seen": snapshot.seen,
        "open": [output_to_dict(d) for d in snapshot.open],
        "started": list(snapshot.started),
    }


def decode_snapshot(data: Mapping[str, Any]) -> Snapshot:
    """A snapshot back; :class:`RecordError` if it cannot be read."""
    if not isinstance(data, Mapping):
        raise RecordError(f"a snapshot is a JSON object, not {type(data).__name__}")
    version = data.get("v")
    if not isinstance(version, int) or not 1 <= version <= Snapshot.version:
        raise RecordError(f"snapshot version {version!r} is newer than this healer reads")
    try:
        snapshot = Snapshot(
            seq=int(data["seq"]),
            state=state_from_dict(data["state"]),
            rules=str(data.get("rules", "")),
            checkpoints={
                s: Checkpoint.from_dict(c) for s, c in data.get("checkpoints", {}).items()
            },
            tails={s: TailPosition.from_dict(t) for s, t in data.get("tails", {}).items()},
            seen=dict(data.get("seen", {})),
            open=tuple(_decision(d) for d in data.get("open", [])),
            started=tuple(data.get("started", [])),
        )
        _check_types(snapshot)
    except _SHAPE_ERRORS as exc:
        raise RecordError(f"damaged snapshot: {exc!r}") from exc
    return snapshot


# --- types ---------------------------------------------------------------------------


def _check_types(value: Any) -> None:
    """TypeError naming the first field (nested too) whose value its annotation rules out.

    The dataclasses check nothing, and a damaged line can hold any JSON value anywhere:
    what is not refused here reads back fine and fails later, in a fold or a report,
    as a traceback instead of a located :class:`JournalCorrupt`.
    """
    for name, hint, fits in _checks(type(value)):
        found = getattr(value, name)
        if not fits(found):
            shown = repr(found)[:60]
            raise TypeError(f"{type(value).__name__}.{name} is {shown}, not {hint}")


_Fits = Callable[[Any], bool]
_CHECKS: dict[type[Any], tuple[tuple[str, Any, _Fits], ...]] = {}


def _checks(cls: type[Any]) -> tuple[tuple[str, Any, _Fits], ...]:
    """Each field's annotation and its check, worked out once per class (reading the
    annotations on every record made decoding four times slower)."""
    found = _CHECKS.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        found = _CHECKS[cls] = tuple(
            (f.name, hints[f.name], _fits(hints[f.name])) for f in dataclasses.fields(cls)
        )
    return found


def _fits(hint: Any) -> _Fits:
    """The check that a value is of type ``hint``, as far as the journal's types go."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is types.UnionType or origin is typing.Union:
        if len(args) == 2 and type(None) in args:  # X | None, most of them: the fast way
            other = _fits(next(arg for arg in args if arg is not type(None)))
            return lambda value: value is None or other(value)
        options = tuple(_fits(arg) for arg in args)
        return lambda value: any(fits(value) for fits in options)
    if origin is tuple:
        item = _fits(args[0])
        return lambda value: isinstance(value, tuple) and all(item(v) for v in value)
    if origin is dict:
        key, entry = _fits(args[0]), _fits(args[1])
        return lambda value: (
            isinstance(value, dict) and all(key(k) and entry(v) for k, v in value.items())
        )
    if hint is type(None):
        return lambda value: value is None
    if hint is float:
        return lambda value: type(value) is float or type(value) is int
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return lambda value: isinstance(value, hint) and _nested(value)
    if hint is bool:
        return lambda value: type(value) is bool
    # a bool is an int to isinstance, never a number (or anything else) in a journal
    return lambda value: isinstance(value, hint) and not isinstance(value, bool)


def _nested(value: Any) -> bool:
    _check_types(value)
    return True
