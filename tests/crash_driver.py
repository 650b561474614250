"""Run the healing loop once (for the kill -9 test): ``crash_driver.py LOG JOURNAL WORLD``."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from healing_loop import World, drive

if __name__ == "__main__":
    log, journal, world = (Path(a) for a in sys.argv[1:4])
    drive(log, journal, World(world, delay_s=0.002), block=256)
    print("DONE", flush=True)
