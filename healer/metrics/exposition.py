"""Exposition: ``/metrics`` over HTTP on loopback, or a node_exporter textfile.

Exposition never changes a metric. What it leaves out is a property of healer's own
registry (:class:`HealerRegistry`): no ``_created`` series, without touching
prometheus_client's process-wide setting, so another library's metrics in the same
process are exported as that library expects. The HTTP server is prometheus_client's WSGI
server on its own daemon thread; the textfile is written atomically (a temporary
file in the same directory, then ``rename``), so node_exporter's textfile collector
never reads half a file.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server, write_to_textfile
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import RestrictedRegistry

from healer.config import split_address

__all__ = ["HealerRegistry", "MetricsServer", "TextfileWriter", "write_textfile"]

log = logging.getLogger(__name__)


class HealerRegistry(CollectorRegistry):
    """healer's registry: every family without its ``_created`` sample.

    ``_created`` would double every counter and histogram in a textfile and on the
    wire, and no dashboard or alert of healer's uses it. Dropping it here, where the
    exposition reads the registry (HTTP, textfile, ``generate_latest``), keeps the
    choice local to healer instead of prometheus_client's global switch.
    """

    def collect(self) -> Iterator[Metric]:
        return _without_created(super().collect())

    def restricted_registry(self, names: Iterable[str]) -> RestrictedRegistry:
        """``/metrics?name[]=...`` reads through this one: filtered the same way."""
        return _Restricted(names, self)


class _Restricted(RestrictedRegistry):
    def collect(self) -> Iterator[Metric]:
        return _without_created(super().collect())


def _without_created(families: Iterable[Metric]) -> Iterator[Metric]:
    for family in families:
        created = family.name + "_created"
        if any(sample.name == created for sample in family.samples):
            family.samples = [s for s in family.samples if s.name != created]
        yield family


@dataclass(slots=True)
class MetricsServer:
    """The running ``/metrics`` endpoint; ``port`` is the bound one (0 picks a free one)."""

    server: WSGIServer
    thread: threading.Thread

    @classmethod
    def start(cls, registry: CollectorRegistry, address: str) -> MetricsServer:
        host, port = split_address(address)  # checked by load_config
        server, thread = start_http_server(port, addr=host, registry=registry)
        return cls(server, thread)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def write_textfile(registry: CollectorRegistry, path: str | Path) -> None:
    """Write the registry's exposition to ``path`` atomically (tmp file, then rename)."""
    write_to_textfile(str(path), registry)


class TextfileWriter:
    """Rewrites a node_exporter textfile every ``interval_s`` and once more at stop.

    A write that fails (a full disk, a directory gone) is logged and counted in
    ``errors``; the next period tries again. The watchdog never stops for it.
    """

    def __init__(
        self, registry: CollectorRegistry, path: str | Path, *, interval_s: float = 10.0
    ) -> None:
        self.registry = registry
        self.path = Path(path)
        self.interval_s = interval_s
        self.errors = 0
        self.writes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healer-textfile", daemon=True)

    def __repr__(self) -> str:
        return f"TextfileWriter({str(self.path)!r}, interval_s={self.interval_s})"

    def start(self) -> None:
        self.write()
        self._thread.start()

    def write(self) -> None:
        try:
            write_textfile(self.registry, self.path)
        except OSError as exc:
            self.errors += 1
            log.error("metrics textfile %s cannot be written: %s", self.path, exc)
        else:
            self.writes += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.write()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.write()  # the last numbers, written after the loop has ended
