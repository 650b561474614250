"""Remove a virtio-fs device and add it again under the same id.

This is the heal for a device CH will not revive by itself: its 60 s connect loop ran
out, or (v52+) it is latched NEEDS_RESET. The order matters (ch-api.md §5.4):

1. find the device in ``vm.info``: by id, else by tag or socket in ``config.fs``;
2. ``vm.remove-device``. The 204 only means "requested": the device stays in
   ``device_tree`` until the guest acknowledges the ACPI eject;
3. poll ``vm.info`` until the id has left ``device_tree`` (``config.fs`` when the
   VMM reports no tree). Re-adding earlier fails with IdentifierNotUnique (#8763);
4. wait until virtiofsd listens, through ``is_ready``. Connecting to check would
   use up virtiofsd's one client; an add-fs before it listens blocks CH's API for
   60 s and then fails;
5. ``vm.add-fs`` with the explicit id. IdentifierNotUnique is retried, bounded: a VMM
   without ``device_tree`` in its info answer cannot show that the eject is pending.

Every wait has an attempt bound and a time bound (tenacity, on the injected clock and
sleep). A stalled API call raises :class:`ChTimeout` from the client and ends the
sequence; it never hangs. The whole run is bounded by the three waits plus the
client's per-call timeout for the call in flight when a bound runs out.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception,
    retry_if_result,
    stop_after_attempt,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_fixed

from healer.vmm.errors import ChApiError, ChError

__all__ = ["FsShare", "ReaddError", "ReaddPolicy", "ReaddResult", "VmmApi", "readd_fs"]


class VmmApi(Protocol):
    """The calls the sequence needs; ChApiClient and ChRemote both have them."""

    def info(self) -> dict[str, Any]: ...

    def remove_device(self, device_id: str) -> None: ...

    def add_fs(
        self, *, tag: str, socket: str, device_id: str, num_queues: int = ..., queue_size: int = ...
    ) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class FsShare:
    """The share to re-add; the VMM's own FsConfig wins when it still lists one."""

    tag: str | None = None
    socket: str | None = None
    device_id: str | None = None
    num_queues: int = 1
    queue_size: int = 1024


@dataclass(frozen=True, slots=True)
class ReaddPolicy:
    """Bounds of the three waits: attempts, seconds, and the pause between tries."""

    gone_attempts: int = 300
    gone_limit_s: float = 60.0
    gone_every_s: float = 0.2
    ready_attempts: int = 600
    ready_limit_s: float = 60.0
    ready_every_s: float = 0.1
    add_attempts: int = 30
    add_limit_s: float = 30.0
    add_every_s: float = 0.5


@dataclass(frozen=True, slots=True)
class ReaddResult:
    """What was done: the steps in order, the counts, and CH's answer to add-fs."""

    device_id: str
    steps: tuple[str, ...]
    info_polls: int
    ready_polls: int
    add_attempts: int
    device: dict[str, Any]


class ReaddError(ChError):
    """A bound ran out (or nothing matched) at ``step``; ``steps`` were done before."""

    def __init__(self, step: str, reason: str, steps: tuple[str, ...]) -> None:
        self.step = step
        self.reason = reason
        self.steps = steps
        super().__init__(f"re-add stopped at {step}: {reason} (done: {', '.join(steps) or '-'})")


class _Deadline(stop_base):
    """Stop once the injected clock passes a deadline (stop_after_delay reads time)."""

    def __init__(self, clock: Callable[[], float], limit_s: float) -> None:
        self.clock = clock
        self.deadline = clock() + limit_s

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.clock() >= self.deadline


def readd_fs(
    api: VmmApi,
    share: FsShare,
    *,
    is_ready: Callable[[], bool],
    policy: ReaddPolicy = ReaddPolicy(),
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ReaddResult:
    """Run the sequence above; see the module docstring for why each step is there."""
    steps: list[str] = []

    def bounded(attempts: int, limit_s: float, every_s: float, retry: Any) -> Retrying:
        return Retrying(
            stop=stop_after_attempt(attempts) | _Deadline(clock, limit_s),
            wait=wait_fixed(every_s),
            retry=retry,
            sleep=sleep,
            reraise=True,
        )

    entry, device_id, present = _locate(api.info(), share)
    body = _add_body(entry, share, device_id)
    if body is None:
        raise ReaddError("find", f"no tag and socket known for {device_id}", ())
    if entry is not None:
        try:
            api.remove_device(device_id)
            steps.append("remove")
        except ChApiError as exc:
            if not exc.no_such_device:
                raise
            steps.append("already-gone")
    else:
        steps.append("pending" if present else "absent")

    polls = 0

    def still_there() -> bool:
        nonlocal polls
        polls += 1
        return _present(api.info(), device_id)

    if steps[-1] != "absent":
        waiting = bounded(
            policy.gone_attempts, policy.gone_limit_s, policy.gone_every_s, retry_if_result(bool)
        )
        try:
            waiting(still_there)
        except RetryError:
            raise ReaddError("gone", f"{device_id} is still in the VMM", tuple(steps)) from None
        steps.append("gone")

    checks = 0

    def ready() -> bool:
        nonlocal checks
        checks += 1
        return is_ready()

    waiting = bounded(
        policy.ready_attempts,
        policy.ready_limit_s,
        policy.ready_every_s,
        retry_if_result(lambda ok: not ok),
    )
    try:
        waiting(ready)
    except RetryError:
        raise ReaddError(
            "ready", f"virtiofsd for {body['socket']} is not listening", tuple(steps)
        ) from None
    steps.append("ready")

    adds = 0

    def add() -> dict[str, Any]:
        nonlocal adds
        adds += 1
        return api.add_fs(**body)

    clash = retry_if_exception(lambda e: isinstance(e, ChApiError) and e.not_unique)
    try:
        device = bounded(policy.add_attempts, policy.add_limit_s, policy.add_every_s, clash)(add)
    except ChApiError as exc:
        if not exc.not_unique:
            raise
        raise ReaddError("add", f"{device_id} stayed taken: {exc}", tuple(steps)) from exc
    steps.append("add")
    return ReaddResult(device_id, tuple(steps), polls, checks, adds, device)


def _fs_entries(info: dict[str, Any]) -> list[dict[str, Any]]:
    config = info.get("config") or {}
    entries = (config.get("fs") or []) if isinstance(config, dict) else []
    return [e for e in entries if isinstance(e, dict)]


def _locate(info: dict[str, Any], share: FsShare) -> tuple[dict[str, Any] | None, str, bool]:
    """The FsConfig CH lists for the share (by id, tag, socket), its id, and presence."""
    entries = _fs_entries(info)
    entry = None
    for key, wanted in (("id", share.device_id), ("tag", share.tag), ("socket", share.socket)):
        if wanted is not None:
            entry = next((e for e in entries if e.get(key) == wanted), None)
            if entry is not None:
                break
    device_id = entry.get("id") if entry is not None else share.device_id
    if not isinstance(device_id, str) or not device_id:
        wanted_text = share.tag or share.socket or "?"
        raise ReaddError("find", f"no fs device matches {wanted_text} and no id was given", ())
    return entry, device_id, _present(info, device_id)


def _present(info: dict[str, Any], device_id: str) -> bool:
    tree = info.get("device_tree")
    if isinstance(tree, dict):
        return device_id in tree
    return any(e.get("id") == device_id for e in _fs_entries(info))


def _add_body(
    entry: dict[str, Any] | None, share: FsShare, device_id: str
) -> dict[str, Any] | None:
    source: dict[str, Any] = entry or {}
    tag = source.get("tag") or share.tag
    socket = source.get("socket") or share.socket
    if not tag or not socket:
        return None
    return {
        "tag": str(tag),
        "socket": str(socket),
        "device_id": device_id,
        "num_queues": int(source.get("num_queues") or share.num_queues),
        "queue_size": int(source.get("queue_size") or share.queue_size),
    }
