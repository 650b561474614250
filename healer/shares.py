"""Share identity, resolved once where lines enter: one key per share everywhere.

Logs name a share in many ways: its virtio-fs tag, its socket path, a device id
(``_fs0``, or the id healer gave it when it added the device), or not at all. Live,
each event is given its configured share *name* before the engine sees it; engine,
journal, metrics and actions then all use that one key. The names come from the
configuration, from what the VMM says when it creates a device (``FsDeviceCreating``:
tag, socket and device id together) and, live, from the VMM's own list of its devices
(cloud-hypervisor's ``vm.info``, asked at start: a creation line read before a restart
of healer is not read again), so an event that names only a device id still reaches
the right share.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from healer.events import Event

__all__ = ["ShareKeys", "ShareNames"]


@dataclass(frozen=True, slots=True)
class ShareNames:
    """How one configured share may be named in logs."""

    name: str
    tag: str
    socket: str


class ShareKeys:
    """Maps every known name of a share to its key (the configured name)."""

    def __init__(self, shares: Sequence[ShareNames]) -> None:
        self.keys = tuple(s.name for s in shares)
        self._alias: dict[str, str] = {}
        for share in shares:
            for alias in (share.name, share.tag, share.socket):
                self._alias.setdefault(alias, share.name)
        # With one share, a line that names none (a VM reset) is about that one.
        self._only = shares[0].name if len(shares) == 1 else None

    def learn(self, event: Event) -> None:
        """A device the VMM creates ties its id to a tag or socket healer knows."""
        if event.kind != "FsDeviceCreating":
            return
        device = _device_of(event)
        if device:
            tag, socket = getattr(event, "tag", None), getattr(event, "socket", None)
            self.learn_devices([(device, tag, socket)])

    def learn_devices(self, devices: Iterable[tuple[str, str | None, str | None]]) -> int:
        """(device id, tag, socket) triples from the VMM; how many named a share."""
        learnt = 0
        for device, tag, socket in devices:
            for value in (tag, socket):
                if value is not None and value in self._alias:
                    self._alias[device] = self._alias[value]
                    learnt += 1
                    break
        return learnt

    def key(self, named: str | None, *, default: str | None = None) -> str | None:
        """The share an event names (``None``: it names none and no default applies)."""
        if named is None:
            return default or self._only
        return self._alias.get(named, named)

    def resolve(self, event: Event, *, default: str | None = None) -> Event:
        """``event`` with its share given as the key; learns from device creation."""
        self.learn(event)
        share = self.key(event.share or _device_of(event), default=default)
        return event if share == event.share else replace(event, share=share)


def _device_of(event: Event) -> str | None:
    device = getattr(event, "device_id", None)
    return str(device) if device else None
