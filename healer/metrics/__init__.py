"""Prometheus metrics: the observer that counts (registry) and how they leave (exposition).

Importing this changes nothing outside healer: the registry is healer's own
(:class:`HealerRegistry`), and so is its choice to export no ``_created`` series.
"""

from healer.metrics.exposition import (
    HealerRegistry,
    MetricsServer,
    TextfileWriter,
    write_textfile,
)
from healer.metrics.registry import EXPORTED, PHASES, HealerMetrics, LimitHits, failure_kinds

__all__ = [
    "EXPORTED",
    "PHASES",
    "HealerMetrics",
    "HealerRegistry",
    "LimitHits",
    "MetricsServer",
    "TextfileWriter",
    "failure_kinds",
    "write_textfile",
]
