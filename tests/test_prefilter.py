"""The prefilter and the per-block accounting of the fast path, against plain references.

The needles are the patterns' own phrases: lines that only name virtiofsd, vhost-user,
an error or a reset (a verbose VMM or daemon writes them by the thousand) are not
candidates, while every event of the corpus still is (tests/test_golden.py).
"""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from healer.parse.stream import SourceParser, _blank_lines, is_candidate
from healer.sources import read_batches
from healer.sources.reader import _may_hold_longer

# Near misses, written from what a verbose cloud-hypervisor, a debug virtiofsd and a
# Kata runtime print (none of them is an event healer or the SEC rules count).
NEAR_MISSES = [
    "cloud-hypervisor:   3.141592s: <_fs0> DEBUG:virtio-devices/src/vhost_user/vu_common_ctrl.rs:118"
    " -- vhost-user backend supports protocol feature MQ, acked 0x0000003f",
    "cloud-hypervisor:   3.2s: <vmm> INFO:vmm/src/device_manager.rs:2512 -- Creating vhost-user-net"
    ' device: VhostUserConfig { socket: "/run/vhu-net0.sock", num_queues: 2 }',
    "cloud-hypervisor:   3.3s: <_fs0> INFO:virtio-devices/src/transport/pci_device.rs:1053 --"
    " Resetting virtio device _fs0 (driver wrote status 0)",
    "[2024-12-04T08:13:20Z DEBUG virtiofsd::server] Replying ERROR, header: OutHeader { len: 16,"
    " error: -2, unique: 8 }",
    "[2024-12-04 08:13:20.000001+0000] [ID: 00000067] fv_queue_thread: kill event on queue 0 -"
    " quitting",
    '2024-12-04T08:13:20+0000 node1 kata[11764]: time="2024-12-04T08:13:20.1Z" level=info'
    ' msg="vhost-user socket of virtiofsd is ready" subsystem=virtiofsd',
    "2024-12-04T08:13:20+0000 node1 systemd[1]: run-containerd-rootfs.mount: Succeeded.",
    "Error-free reply payload from the vhost-user Client after a reset; nothing exited",
]


@pytest.mark.parametrize("line", NEAR_MISSES)
def test_a_line_that_only_names_the_programs_is_no_candidate(line: str) -> None:
    assert not is_candidate(line.encode())


@pytest.mark.parametrize(
    "line",
    [
        "cloud-hypervisor:   3.4s: <_fs0> INFO:virtio-devices/src/vhost_user/mod.rs:393 -- vhost-user"
        " backend for socket /run/vfsd/fs0.sock disconnected, attempting reconnection",
        "[2024-12-04T08:13:20Z INFO  virtiofsd] Client disconnected, shutting down",
        '2024-12-04T08:13:20+0000 node1 kata[11764]: time="2024-12-04T08:13:20.1Z" level=info'
        ' msg="virtiofsd quits" subsystem=virtiofsd',
        "mount: /mnt: wrong fs type, bad option, bad superblock on myfs, missing codepage or"
        " helper program, or other error.",
    ],
)
def test_the_events_among_them_still_are(line: str) -> None:
    assert is_candidate(line.encode())
    assert len(SourceParser("x", default_year=2024).parse_all(line.encode() + b"\n")) == 1


def _blank_reference(block: bytes) -> int:
    return sum(1 for line in block.split(b"\n")[:-1] if line in (b"", b"\r"))


@settings(max_examples=400)
@given(st.lists(st.sampled_from([b"", b"\r", b"x", b"ab\r", b" ", b"\r\r"]), min_size=1))
def test_blank_lines_are_counted_as_splitting_would(lines: list[bytes]) -> None:
    block = b"\n".join(lines) + b"\n"
    assert _blank_lines(block) == _blank_reference(block)


@settings(max_examples=300)
@given(st.lists(st.integers(0, 90), min_size=1, max_size=40), st.integers(1, 64))
def test_a_block_with_a_line_over_the_limit_is_always_looked_at(
    lengths: list[int], limit: int
) -> None:
    block = b"".join(b"y" * n + b"\n" for n in lengths)
    if max(lengths) > limit:
        assert _may_hold_longer(block, limit)


@settings(max_examples=200)
@given(st.lists(st.integers(0, 300), min_size=1, max_size=30), st.integers(8, 200))
def test_long_lines_are_cut_whatever_the_quick_check_said(lengths: list[int], limit: int) -> None:
    data = b"".join(b"z" * n + b"\n" for n in lengths)
    lines = [
        line
        for block, _ in read_batches(io.BytesIO(data), chunk_size=1 << 12, max_line_bytes=limit)
        for line in block.split(b"\n")[:-1]
    ]
    assert [len(line) for line in lines] == [min(n, limit) for n in lengths]
