"""The live watchdog (the "brain"): its files are its roles.

- ``watchdog.py``: the parts put together and the life cycle (start-up, stop, the
  holder connection);
- ``loop.py``: the one thread that decides and writes the journal;
- ``daemons.py``: every share's current virtiofsd, started through the holder or
  adopted;
- ``stderr.py``: each daemon's stderr file into events about that daemon;
- ``logs.py``: the tailed logs into events about their shares;
- ``reload.py``: SIGHUP;
- ``messages.py``: what other threads tell the loop.

The data path (listening sockets, the virtiofsd processes) is not here but in the
holder (:mod:`healer.holder`), which outlives this process.
"""

from healer.live.watchdog import Watchdog, holder_dir

__all__ = ["Watchdog", "holder_dir"]
