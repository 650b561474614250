"""The commands of the live side: ``healer watch``, ``healer hold``, ``healer stop``.

``watch`` runs the brain (:class:`~healer.live.watchdog.Watchdog`) with the signals a
service gets: SIGTERM and SIGINT stop it (daemons keep serving), SIGHUP reloads,
SIGUSR1, SIGUSR2 and SIGPIPE are ignored and logged (a stray signal must not take
the watchdog down). ``hold`` runs the holder in the foreground (what systemd's
``healer-holder.service`` starts). ``stop`` ends everything: the brain if it runs,
then every daemon and socket through the holder.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from types import FrameType

from healer.config import Config, load_config
from healer.holder.client import HolderClient, HolderError
from healer.journal.lock import lock_holder
from healer.live.messages import Wake
from healer.live.watchdog import Watchdog, holder_dir
from healer.logline import configure
from healer.rulefiles import default_rules_dir, load_rules

__all__ = ["IGNORED_SIGNALS", "hold", "stop", "stop_holder", "watch"]

log = logging.getLogger("healer")

IGNORED_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGPIPE)


def watch(path: str) -> int:
    """Load and check everything first; only a valid setup starts supervising."""
    config = load_config(path)
    rules = load_rules(config.rules or default_rules_dir())
    configure(config.log_level)  # for journald when stderr is the journal (logline.py)
    stop, reload = threading.Event(), threading.Event()
    watchdog = Watchdog(config, rules)

    # The handlers only set flags and wake the loop (SimpleQueue.put is reentrant): no
    # logging or I/O inside a signal handler.
    def stopping(number: int, _frame: FrameType | None) -> None:
        stop.set()
        watchdog.loop.post(Wake())

    def reloading(number: int, _frame: FrameType | None) -> None:
        reload.set()
        watchdog.loop.post(Wake())

    def ignored(number: int, _frame: FrameType | None) -> None:
        watchdog.ignored_signals.append(number)
        watchdog.loop.post(Wake())

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, stopping)
    signal.signal(signal.SIGHUP, reloading)
    for number in IGNORED_SIGNALS:
        signal.signal(number, ignored)
    code = watchdog.serve(stop, reload)
    log.info("stopped; virtiofsd keeps serving (healer stop --config %s ends it)", path)
    return code


def hold(path: str) -> int:
    """The holder of ``path``'s shares, in the foreground."""
    from healer.holder.__main__ import main as holder_main  # noqa: PLC0415

    config = load_config(path)
    return holder_main(["--dir", str(holder_dir(config))])


def stop(path: str, *, timeout_s: float = 30.0) -> int:
    """Stop everything of one configuration: the brain, then daemons and sockets."""
    config = load_config(path)
    _stop_brain(config, timeout_s)
    why = stop_holder(config)
    print(f"healer: {why or f'stopped the shares of {path} (virtiofsd and sockets)'}")
    return 0


def stop_holder(config: Config) -> str | None:
    """Have the holder stop every daemon and remove every socket; why not, if it did not."""
    directory = holder_dir(config)
    if not (directory / "holder.sock").exists():
        return f"no holder runs for {config.file}"
    try:
        holder = HolderClient.connect(
            directory, start=False, on_exit=lambda _gone: None, on_lost=lambda: None
        )
    except HolderError as exc:
        return f"no holder answers at {directory}: {exc}"
    try:
        holder.shutdown()
    finally:
        holder.close()
    return None


def _stop_brain(config: Config, timeout_s: float) -> None:
    """SIGTERM to the healer holding the journal's lock; wait until it lets go. Nothing
    is written to the journal's directory (its disk may be read-only or full)."""
    try:
        busy = lock_holder(config.journal)
    except OSError as exc:
        print(f"healer: cannot read the journal's lock ({exc.strerror}); stopping the holder")
        return
    if busy is None or busy.pid is None:
        return
    os.kill(busy.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if lock_holder(config.journal) is None:
                return
        time.sleep(0.05)
    print(f"healer: healer {busy.pid} did not stop within {timeout_s:g} s")
