"""One fault told twice is one event, and two faults told alike stay two.

Each case is a short log written from a real wording (tests/field_corpus,
../shared/corpus); what a reader makes of it is stated by hand: which lines are
events, which line repeats which, and why.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from healer.events import Event, Origin, VirtiofsdClientDisconnected
from healer.parse import Repeat, SourceParser
from healer.parse.repeats import RecentEvents


def _read(text: str) -> tuple[list[tuple[int, str]], list[tuple[int, int, str]]]:
    parser = SourceParser("t", default_year=2024)
    items = parser.parse_all(text.encode())
    events = [(i.line, i.kind) for i in items if isinstance(i, Event)]
    repeats = [(i.line, i.of_line, i.why) for i in items if isinstance(i, Repeat)]
    assert parser.stats.events == len(events)  # what metrics count: each fault once
    assert parser.stats.repeats == len(repeats)
    return events, repeats


KATA = (
    "Jul 18 01:43:14 host {prog}[{pid}]: "
    'time="2019-07-18T01:43:14.{frac}Z" level=info msg="virtiofsd quits" '
    "source=virtcontainers subsystem=qemu\n"
)


def test_a_journald_copy_under_containerd_is_one_exit() -> None:
    text = KATA.format(prog="kata", pid=41442, frac="335059887") + KATA.format(
        prog="containerd", pid=25310, frac="335059887"
    )
    assert _read(text) == ([(1, "VirtiofsdExited")], [(2, 1, "copy")])


def test_a_daemon_that_quits_again_a_moment_later_quit_twice() -> None:
    text = KATA.format(prog="kata", pid=41442, frac="335059887") + KATA.format(
        prog="kata", pid=41442, frac="935059887"
    )
    assert _read(text) == ([(1, "VirtiofsdExited"), (2, "VirtiofsdExited")], [])


def test_three_daemons_that_log_alike_in_one_second_are_three() -> None:
    line = (
        "Jul 02 01:22:06 ward microvm-virtiofsd@loki[{pid}]: "
        "[2023-07-01T23:22:06Z INFO  virtiofsd] Waiting for vhost-user socket connection...\n"
    )
    text = "".join(line.format(pid=pid) for pid in (2714343, 2714341, 2714344))
    assert _read(text) == ([(n, "VirtiofsdListening") for n in (1, 2, 3)], [])


def test_two_daemons_timed_by_a_neighbours_stamp_are_two() -> None:
    # Bare lines take their time from the source's clock, fraction and all: a fraction
    # that is not in the record says nothing about one record told twice.
    when = datetime(2024, 7, 18, 12, 54, 10, 503921, tzinfo=UTC)
    said = "Client disconnected, shutting down"
    recent = RecentEvents()
    for line, pid in ((896902, 3388719), (896938, 371947)):
        event = VirtiofsdClientDisconnected(
            time=when,
            source="t",
            offset=line * 100,
            line=line,
            origin=Origin(program="virtiofsd", pid=pid),
            message=said,
            raw=f"virtiofsd[{pid}]: {said}",
        )
        assert recent.repeat_of(event) is None


def test_a_traceback_ending_in_the_dialogs_error_is_that_error() -> None:
    text = (
        "Error starting domain: internal error: virtiofsd died unexpectedly\n"
        "\n"
        "Traceback (most recent call last):\n"
        '  File "/usr/lib/python3.12/site-packages/libvirt.py", line 1401, in create\n'
        "    raise libvirtError('virDomainCreate() failed')\n"
        "libvirt.libvirtError: internal error: virtiofsd died unexpectedly\n"
    )
    assert _read(text) == ([(1, "VirtiofsdExited")], [(6, 1, "traceback")])


QEMU_DEVICE = "qemu-kvm: -device vhost-user-fs-pci,chardev=chr-vu-fs0,tag={tag}: {what}\n"


def test_qemus_second_line_for_one_device_continues_its_failure() -> None:
    text = QEMU_DEVICE.format(
        tag="sharedfs", what="Failed to read msg header. Read 0 instead of 12."
    ) + QEMU_DEVICE.format(tag="sharedfs", what="vhost_dev_init failed: Operation not permitted")
    assert _read(text) == ([(1, "BackendConnectFailed")], [(2, 1, "continuation")])


def test_two_devices_failing_are_two_failures() -> None:
    text = QEMU_DEVICE.format(
        tag="one", what="vhost_dev_init failed: Operation not permitted"
    ) + QEMU_DEVICE.format(tag="two", what="vhost_dev_init failed: Operation not permitted")
    events, repeats = _read(text)
    assert events == [(1, "BackendConnectFailed"), (2, "BackendConnectFailed")]
    assert repeats == []


def test_a_burst_of_qemus_vhost_user_words_is_one_lost_session() -> None:
    text = (
        "qemu-kvm: Failed to write msg. Wrote -1 instead of 20.\n"
        "qemu-kvm: Failed to set msg fds.\n"
        "qemu-kvm: vhost_set_vring_call failed: Invalid argument (22)\n"
        "qemu-kvm: Unexpected end-of-file before all data were read\n"
    )
    assert _read(text) == ([(1, "BackendDisconnected")], [(4, 1, "burst")])


def test_qemu_losing_the_session_again_later_is_a_second_loss() -> None:
    text = (
        "2024-03-01T10:00:00.100000Z qemu-kvm: Unexpected end-of-file before all data were read\n"
        "2024-03-01T10:00:30.100000Z qemu-kvm: Unexpected end-of-file before all data were read\n"
    )
    assert _read(text) == ([(1, "BackendDisconnected"), (2, "BackendDisconnected")], [])


RESET = "cloud-hypervisor: {up}s: INFO:devices/src/{where} -- {what}\n"


def test_acpi_and_i8042_reporting_one_reset_are_one_reset() -> None:
    text = RESET.format(
        up="12.50117339", where="acpi.rs:39", what="ACPI Reboot signalled"
    ) + RESET.format(up="12.501351602", where="legacy/i8042.rs:37", what="i8042 reset signalled")
    assert _read(text) == ([(1, "VmReset")], [(2, 1, "reset")])


def test_two_resets_seconds_apart_are_two() -> None:
    text = RESET.format(
        up="12.50117339", where="acpi.rs:39", what="ACPI Reboot signalled"
    ) + RESET.format(up="14.2", where="acpi.rs:39", what="ACPI Reboot signalled")
    assert _read(text) == ([(1, "VmReset"), (2, "VmReset")], [])


FATAL = (
    "cloud-hypervisor: {up}s: <vmm> ERROR:cloud-hypervisor/src/lib.rs:900 -- Fatal error: "
    'VmBoot(VmBoot(FirmwareFile(Os {{ code: 2, kind: NotFound, message: "No such file" }})))\n'
    "Error: Cloud Hypervisor exited with the following chain of errors:\n"
    " 0: Error booting VM\n"
    " 1: The VM could not boot\n"
    " 2: Error manipulating firmware file\n"
    " 3: No such file or directory (os error 2)\n"
)


def test_the_fatal_log_line_and_the_stderr_chain_are_one_exit() -> None:
    assert _read(FATAL.format(up="0.052311")) == ([(1, "VmmExited")], [(2, 1, "exit")])


def test_a_vmm_restarted_by_a_loop_that_fails_again_exits_again() -> None:
    """vm.sh's loop: the second run's logger line is a second exit, with its own chain."""
    text = FATAL.format(up="0.052311") + FATAL.format(up="0.049002")
    assert _read(text) == ([(1, "VmmExited"), (7, "VmmExited")], [(2, 1, "exit"), (8, 7, "exit")])


@pytest.mark.parametrize("cut", [1, 2])
def test_a_repeat_is_found_across_block_boundaries(cut: int) -> None:
    """The live tailer feeds whatever whole lines arrived: a copy in the next block is
    still a copy."""
    lines = [
        KATA.format(prog="kata", pid=41442, frac="335059887").encode(),
        KATA.format(prog="containerd", pid=25310, frac="335059887").encode(),
    ]
    parser = SourceParser("t", default_year=2024)
    head = b"".join(lines[:cut])
    tail = b"".join(lines[cut:])
    items = parser.feed(head, 0) + parser.feed(tail, len(head)) + parser.close()
    kinds = [type(i).__name__ for i in items if isinstance(i, Event | Repeat)]
    assert kinds == ["VirtiofsdExited", "Repeat"]


SEGFAULT = (
    "Jul 18 01:43:09 host kernel: virtiofsd-x86_6[41629]: segfault at 7f931fc123c8"
    " ip 00007f93b9a38948 sp 00007f9328e81988 error 6 in libc-2.27.so[7f93b98c9000+1c6000]\n"
)
COREDUMP = (
    "Jul 18 01:43:{sec} host systemd-coredump[41918]: Process 41462 ({name}) of user 0"
    " dumped core.\n"
)


def test_the_kernels_segfault_and_the_core_dump_are_one_crash() -> None:
    """CG01: the kernel reports the thread's segfault, systemd-coredump the dump five
    seconds later: one virtiofsd died once."""
    text = SEGFAULT + COREDUMP.format(sec="14", name="virtiofsd-x86_6")
    assert _read(text) == ([(1, "VirtiofsdExited")], [(2, 1, "crash")])


def test_audits_seccomp_and_abend_records_and_the_dump_are_one_crash() -> None:
    """CG02: audit's SECCOMP kill and ANOM_ABEND for one pid, then systemd-coredump."""
    audit = (
        "audit[346709]: {what} auid=4294967295 uid=0 gid=0 ses=4294967295 pid=346709"
        ' comm="virtiofsd" exe="/usr/libexec/virtiofsd" sig=31 {tail}\n'
    )
    text = (
        audit.format(what="SECCOMP", tail="arch=c0000015 syscall=334 code=0x80000000")
        + audit.format(what="ANOM_ABEND", tail="res=1")
        + "systemd-coredump[346716]: Process 346709 (virtiofsd) of user 0 dumped core.\n"
    )
    assert _read(text) == ([(1, "VirtiofsdExited")], [(2, 1, "crash"), (3, 1, "crash")])


def test_two_programs_crashing_are_two_crashes() -> None:
    """The dump is of another program's process: not the segfaulted virtiofsd."""
    text = SEGFAULT + COREDUMP.format(sec="14", name="virtiofsd")
    assert _read(text) == ([(1, "VirtiofsdExited"), (2, "VirtiofsdExited")], [])


def test_a_dump_a_minute_after_the_segfault_is_another_crash() -> None:
    """Past the reach of one crash's reports (a restarted daemon crashing again)."""
    text = SEGFAULT.replace("01:43:09", "01:42:09") + COREDUMP.format(
        sec="14", name="virtiofsd-x86_6"
    )
    assert _read(text) == ([(1, "VirtiofsdExited"), (2, "VirtiofsdExited")], [])
