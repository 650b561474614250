"""virtiofsd SIGKILLed -> the share usable again in a real guest, under QEMU (TCG).

The rig of tests/guest boots a Linux guest whose vhost-user-fs device is served by
``healer watch`` (the real virtiofsd, QEMU over QMP, the serial console transport).
Each round kills virtiofsd while the guest is idle, waits until healer journals the
remount, and then writes a file in the guest and reads it on the host: ``total`` is
kill -> that I/O done. The steps come from healer's own log lines, timed as they
arrive, and from the guest's uptime around its mount:

- respawn: kill -> the next virtiofsd started (the holder saw the exit, told healer,
  and started the daemon healer asked for);
- device_del: QOM read + device_del until QEMU's DEVICE_DELETED;
- device_add: chardev-remove, the ready check, chardev-add, device_add;
- guest bind: in the guest, until the re-added device mounts (the driver binds it);
- remount: the rest of the remount over the console (probe, round trips).

Rounds are 2 s apart so each death is a first one (the rules' backoff starts after
one healthy second in this rig; the storm rule is raised so ten kills stay healing).
"""

from __future__ import annotations

import argparse
import re
import signal
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from guest.rig import Rig, missing  # noqa: E402

STEPS = ("respawn", "device_del", "device_add", "guest bind", "remount")
_DURATION = re.compile(r"(\w+) ([0-9.]+) s")
_TIMING = re.compile(r"(guest_bind|remount|mount_tries) ([0-9.]+)")


def first_after(rig: Rig, since: float, needle: str) -> tuple[float, str]:
    for at, line in list(rig.lines):
        if at >= since and re.search(needle, line):
            return at, line
    msg = f"no healer line with {needle!r}"
    raise LookupError(msg)


def one_kill(rig: Rig, n: int) -> dict[str, float]:
    pid = rig.kill()
    killed = time.monotonic()
    rig.wait(lambda: rig.healed(pid), 60.0, f"the heal after killing {pid}")
    name = f"bench{n}"
    rig.round_trip(name)
    usable = time.monotonic()
    # the exit seen and the next daemon started (the loop starts it the moment the
    # holder reports the exit, before the decision's re-add runs)
    started, _ = first_after(rig, killed, r"share fs0: virtiofsd \d+ started")
    readded, readd_line = first_after(rig, killed, "re-added fs0 through QMP")
    remounted, remount_line = first_after(rig, killed, "remounted fs0 in the guest")
    qmp = {k: float(v) for k, v in _DURATION.findall(readd_line)}
    guest = {k: float(v) for k, v in _TIMING.findall(remount_line)}
    device_del = qmp.get("describe", 0.0) + qmp.get("device_del", 0.0)
    return {
        "total": usable - killed,
        "healer": remounted - killed,
        "respawn": started - killed,
        "device_del": device_del,
        "device_add": readded - started - device_del,
        "guest bind": guest.get("guest_bind", 0.0),
        "remount": remounted - readded - guest.get("guest_bind", 0.0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=12)
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between kills")
    args = parser.parse_args()
    lacking = missing()
    if lacking is not None:
        print(f"kill_to_usable: needs {lacking}", file=sys.stderr)
        return 2
    rows = []
    with Rig() as rig:
        print(f"guest booted in {rig.vm.booted_s:.2f} s (TCG); {args.kills} kills")
        for n in range(args.kills):
            rows.append(one_kill(rig, n))
            time.sleep(args.pause)
        assert rig.healer is not None
        rig.healer.send_signal(signal.SIGTERM)
    columns = ("total", "healer", *STEPS)
    print()
    print("| kill | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for n, row in enumerate(rows, 1):
        print(f"| {n} | " + " | ".join(f"{row[c]:.3f}" for c in columns) + " |")
    print()
    print("| seconds | " + " | ".join(columns) + " |")
    print("|---" * (len(columns) + 1) + "|")
    for label, pick in (("p50", statistics.median), ("max", max)):
        values = [pick([row[c] for row in rows]) for c in columns]
        print(f"| {label} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    p50 = statistics.median(row["total"] for row in rows)
    share = {s: statistics.median(row[s] for row in rows) / p50 for s in STEPS}
    print()
    print("share of the p50 total: " + ", ".join(f"{s} {v:.0%}" for s, v in share.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
