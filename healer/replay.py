"""The offline merge's old place; it is :mod:`healer.pipeline.replay` now.

Kept only for ``bench/metrics_overhead.py``, which imports ``Input`` and ``replay``
from here; everything else imports :mod:`healer.pipeline`.
"""

from healer.pipeline.replay import Input, replay

__all__ = ["Input", "replay"]
