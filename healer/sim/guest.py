"""A guest stand-in for the remount transport: it records each command it is given.

``[guest] remount = ["python3", "-m", "healer.sim.guest", "--log", "/tmp/guest.log"]``
makes healer's remount steps (``umount DIR``, ``mount -t virtiofs TAG DIR``, ``ls DIR``)
land as lines in that file instead of running in a VM: for ``healer demo`` and for
rehearsing a configuration before pointing it at ssh.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m healer.sim.guest")
    parser.add_argument("--log", required=True, type=Path, help="file the commands go to")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the guest command")
    args = parser.parse_args(argv)
    if not args.command:
        parser.error("no guest command given")
    with args.log.open("a", encoding="utf-8") as log:
        log.write(" ".join(args.command) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
