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
import socket
import sys
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app, write_to_textfile
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


MAX_CONNECTIONS = 16  # at once: Prometheus, a second one and a person with curl
IDLE_S = 10.0  # a connection that sends nothing for this long is closed


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


class _BoundedServer(ThreadingMixIn, WSGIServer):
    """prometheus_client's thread-per-connection server, with at most
    ``MAX_CONNECTIONS`` at once and idle ones closed after ``IDLE_S``: a client that
    opens connections and sends nothing would otherwise hold a thread each."""

    daemon_threads = True
    request_queue_size = MAX_CONNECTIONS  # connects beyond wait in the kernel, not here

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self.refused = 0  # connections closed at once: every slot was taken
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)
            return
        request.settimeout(IDLE_S)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()  # no thread started to give it back
            raise

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went quiet or away is no error (socketserver prints one)."""
        if not isinstance(sys.exc_info()[1], OSError):
            log.warning("/metrics request from %s failed", client_address, exc_info=True)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


@dataclass(slots=True)
class MetricsServer:
    """The running ``/metrics`` endpoint; ``port`` is the bound one (0 picks a free one)."""

    server: _BoundedServer
    thread: threading.Thread

    @classmethod
    def start(cls, registry: CollectorRegistry, address: str) -> MetricsServer:
        host, port = split_address(address)  # checked by load_config
        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Server(_BoundedServer):
            address_family = family

        server = make_server(host, port, make_wsgi_app(registry), Server, handler_class=_Quiet)
        thread = threading.Thread(target=server.serve_forever, name="metrics", daemon=True)
        thread.start()
        return cls(server, thread)

    @property
    def refused(self) -> int:
        return self.server.refused

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
