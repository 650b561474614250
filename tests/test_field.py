"""The operator's field check (tests/field.py) with each real daemon: the README's own
configuration, a VMM connected, the faults of real life. A fault of the share is healed
once; nothing healer does to itself reaches the VMM. Expectations written by hand."""

from __future__ import annotations

from field import Count, field_check

from healer.supervise import DaemonInfo

# fault -> (healings, guest remounts, session drops, refused connects, note)
EXPECTED = {
    "virtiofsd killed": (1, 1, 1, 0, ""),  # the one drop is the fault itself
    "healer killed": (0, 0, 0, 0, ""),
    "healer restarted": (0, 0, 0, 0, ""),
    "SIGHUP": (0, 0, 0, 0, ""),
    "second healer": (0, 0, 0, 0, "exit 5"),
    # the probe is no fault: dropped before the next daemon could take it for a client
    "dead connection, then a kill": (1, 1, 1, 0, "dropped from the backlog"),
}


def test_each_fault_is_healed_once_and_healer_never_reaches_the_vmm(
    virtiofsd: DaemonInfo,
) -> None:
    counts = field_check()
    print(*counts, sep="\n")
    assert [c.fault for c in counts] == list(EXPECTED)  # and no traceback row
    for count in counts:
        assert isinstance(count, Count)
        seen = (count.healings, count.remounts, count.session_drops, count.refused, count.note)
        assert seen == EXPECTED[count.fault], count
        assert count.served, count
