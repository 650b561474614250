"""A tiny Type=notify service on healer.systemd, for tests/test_systemd_rig.py.

    notify_service.py SOCKET [HOLD_FILE]

It takes its listening Unix socket back from systemd (``listen_fds``, name "listener"),
or binds SOCKET (0600) and stores it (``store_fds``); while HOLD_FILE exists it does not
accept (so a test can see a client queued on the held socket); then ``ready()`` and one
JSON line per connection: its pid, the listener's inode, whether the listener came from
the store, its reload generation and watchdog pings. SIGHUP is a reload
(``reloading()``, then ``ready()``); SIGUSR1 stops the watchdog pings; SIGTERM stops.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import socket
import sys
import time
from pathlib import Path

from healer.systemd import Notifier, listen_fds, watchdog_interval

HOLD_LIMIT_S = 120.0  # never hold forever, whatever the test does


def listener(path: Path, notifier: Notifier) -> tuple[socket.socket, bool]:
    """The listener from systemd's store, or a new one, stored there."""
    passed = listen_fds().get("listener", [])
    if passed:
        return socket.socket(fileno=passed[0]), True
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    sock.listen(16)
    notifier.store_fds("listener", [sock.fileno()])
    return sock, False


def main(argv: list[str]) -> int:
    notifier = Notifier.from_environ()
    sock, from_store = listener(Path(argv[0]), notifier)
    hold = Path(argv[1]) if len(argv) > 1 else None
    inode = os.fstat(sock.fileno()).st_ino
    print(f"listener inode {inode}, from the store: {from_store}", flush=True)

    # Signals arrive as bytes on a socket the loop selects on (the handlers do nothing).
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    for handled in (signal.SIGHUP, signal.SIGUSR1, signal.SIGTERM):
        signal.signal(handled, lambda *_: None)

    interval = watchdog_interval()
    half = interval / 2 if interval is not None else None
    pinging = half is not None
    pings, generation = 0, 0

    deadline = time.monotonic() + HOLD_LIMIT_S
    while hold is not None and hold.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    notifier.ready(f"serving, listener from the store: {from_store}")

    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ, "accept")
    selector.register(wake_r, selectors.EVENT_READ, "signal")
    next_ping = time.monotonic()
    while True:
        if pinging and half is not None and time.monotonic() >= next_ping:
            notifier.watchdog()
            pings += 1
            next_ping = time.monotonic() + half
        timeout = max(0.0, next_ping - time.monotonic()) if pinging else None
        for key, _ in selector.select(timeout):
            if key.data == "accept":
                conn, _ = sock.accept()
                with conn:
                    answer = {
                        "pid": os.getpid(),
                        "inode": inode,
                        "from_store": from_store,
                        "generation": generation,
                        "pings": pings,
                    }
                    conn.sendall(json.dumps(answer).encode() + b"\n")
                continue
            for signum in wake_r.recv(64):
                if signum == signal.SIGHUP:
                    notifier.reloading(f"reloading generation {generation + 1}")
                    generation += 1
                    print(f"reloaded: generation {generation}", flush=True)
                    notifier.ready(f"generation {generation}")
                elif signum == signal.SIGUSR1:
                    print("watchdog pings stop", flush=True)
                    pinging = False
                elif signum == signal.SIGTERM:
                    notifier.stopping()
                    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
