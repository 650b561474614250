"""The operator's field check, as a table per daemon: the README's own configuration, the
real virtiofsd, a VMM connected, and each fault of real life counted (see tests/field.py
for the setup and the faults; tests/test_field.py asserts the same counts). Run:

    .venv/bin/python bench/field_check.py                  # every daemon of the matrix here
    .venv/bin/python bench/field_check.py --daemons c-7.2 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from conftest import available_daemons  # noqa: E402
from field import FAULTS, Count, field_check  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--daemons", default="", help="ids, e.g. c-7.2 (default: all here)")
    parser.add_argument("--rounds", type=int, default=3, help="fields per daemon")
    args = parser.parse_args()
    daemons = available_daemons()
    wanted = [d for d in args.daemons.split(",") if d] or sorted(daemons)
    print(f"each fault {args.rounds} times per daemon, summed; a fresh field each round")
    print()
    print(
        "| daemon | fault | healings | guest remounts | session drops | refused | served after "
        "| seen |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for daemon in wanted:
        os.environ["HEALER_VIRTIOFSD"] = daemons[daemon].path
        total: dict[str, list[Count]] = defaultdict(list)
        for _ in range(args.rounds):
            for count in field_check():
                total[count.fault].append(count)
        for fault in [*FAULTS, *(f for f in total if f not in FAULTS)]:
            seen = total.get(fault, [])
            print(
                f"| {daemon} | {fault} | {sum(c.healings for c in seen)} | "
                f"{sum(c.remounts for c in seen)} | {sum(c.session_drops for c in seen)} | "
                f"{sum(c.refused for c in seen)} | {sum(c.served for c in seen)}/{len(seen)} | "
                f"{'; '.join(sorted({c.note for c in seen if c.note}))} |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
