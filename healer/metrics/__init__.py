"""Prometheus metrics: the observer that counts (registry) and how they leave (exposition)."""

from prometheus_client import disable_created_metrics

from healer.metrics.exposition import MetricsServer, TextfileWriter, parse_address, write_textfile
from healer.metrics.registry import EXPORTED, PHASES, HealerMetrics, LimitHits, failure_kinds

# No ``_created`` series: they double every counter and histogram in a textfile and on
# the wire, and healer's dashboards and alerts do not use them.
disable_created_metrics()  # type: ignore[no-untyped-call]

__all__ = [
    "EXPORTED",
    "PHASES",
    "HealerMetrics",
    "LimitHits",
    "MetricsServer",
    "TextfileWriter",
    "failure_kinds",
    "parse_address",
    "write_textfile",
]
