"""Dead connections in a held socket's accept queue, found with sock_diag and dropped.

virtiofsd serves the one client it accepts and exits when that client goes. A
connection that waits in the listen backlog after its client has closed it (a
connect-and-close probe, a VMM that connected and died before being accepted) would
be accepted by the next virtiofsd, which reads EOF and exits 0 at once, while the real
VMM queued behind it waits for yet another daemon: a restart storm that is not one.

The kernel knows which queued connections are dead. NETLINK_SOCK_DIAG with UNIX_DIAG
and ``UDIAG_SHOW_ICONS``, asked about the listening socket by inode, returns for each
connection in its accept queue, in queue order, the inode of the client's socket, or
0 when the client has closed it (a closed socket is orphaned, so the kernel's
``sock_i_ino(peer)`` is 0). One exact lookup by inode, not a dump of every socket.

Layouts (native byte order, from ``<linux/netlink.h>``, ``<linux/sock_diag.h>`` and
``<linux/unix_diag.h>``), as ``struct`` formats:

- ``struct nlmsghdr``: ``=IHHII``, 16 bytes: nlmsg_len (header included), nlmsg_type,
  nlmsg_flags, nlmsg_seq, nlmsg_pid.
- ``struct unix_diag_req``: ``=BBHIIIII``, 24 bytes: sdiag_family (AF_UNIX),
  sdiag_protocol (0), pad, udiag_states (bit mask of states), udiag_ino, udiag_show
  (``UDIAG_SHOW_*`` bits), udiag_cookie[2] (``{~0, ~0}``: no cookie check).
- ``struct unix_diag_msg``: ``=BBBBIII``, 16 bytes: udiag_family, udiag_type,
  udiag_state (TCP_LISTEN = 10 for a listener), pad, udiag_ino, udiag_cookie[2].
- ``struct nlattr``: ``=HH``, 4 bytes: nla_len (header included), nla_type; attributes
  follow the unix_diag_msg, each padded to 4 bytes.
- ``UNIX_DIAG_ICONS`` (3): an array of ``__u32`` client inodes, head of queue first.
- ``UNIX_DIAG_RQLEN`` (4): ``struct unix_diag_rqlen`` ``=II``: udiag_rqueue (for a
  listener: the accept-queue length), udiag_wqueue (for a listener: its backlog).
- An error comes back as NLMSG_ERROR (2) carrying ``struct nlmsgerr``: ``=i`` error
  (a negative errno) followed by the request's header.
"""

from __future__ import annotations

import os
import select
import socket
import struct
from dataclasses import dataclass

__all__ = ["NETLINK_SOCK_DIAG", "Drained", "drain_dead", "pending", "queued"]

NETLINK_SOCK_DIAG = 4  # <linux/netlink.h>
SOCK_DIAG_BY_FAMILY = 20  # <linux/sock_diag.h>
NLM_F_REQUEST = 0x1
UDIAG_SHOW_ICONS = 0x08  # <linux/unix_diag.h>
UDIAG_SHOW_RQLEN = 0x10
UNIX_DIAG_ICONS = 3
UNIX_DIAG_RQLEN = 4
TCP_LISTEN = 10
_NLA_TYPE_MASK = 0x3FFF  # nla_type without NLA_F_NESTED / NLA_F_NET_BYTEORDER
_NO_COOKIE = 0xFFFFFFFF
_ALL_STATES = 0xFFFFFFFF

_NLMSGHDR = struct.Struct("=IHHII")
_UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")
_UNIX_DIAG_MSG = struct.Struct("=BBBBIII")
_NLATTR = struct.Struct("=HH")
_RQLEN = struct.Struct("=II")

# The kernel gives up on an exact-lookup reply beyond a few KiB and answers EMSGSIZE
# (here, Linux 6.18: beyond 1957 queued connections, so queued() is None), so a reply
# always fits; MSG_TRUNC is checked all the same.
_RECV_BYTES = 16384
_TIMEOUT_S = 1.0
_SEQ = 0x6865616C  # any value: only this one reply is read on a fresh socket
# Rounds of query-then-accept in drain_dead: a second query catches probes that
# queued up and died while the first round drained; the bound keeps a probe flood
# from holding the caller.
_DRAIN_ROUNDS = 4


@dataclass(frozen=True)
class Drained:
    """What :func:`drain_dead` accepted and closed.

    ``unexpected_live`` counts accepted connections that did not look dead when
    checked; it is 0 unless the caller's guarantee (nobody else accepts on the
    socket meanwhile) was broken, and a non-zero value is worth a warning.
    """

    dropped: int
    unexpected_live: int = 0


def queued(
    listener: socket.socket,
    *,
    netlink_protocol: int = NETLINK_SOCK_DIAG,
    diag_family: int = socket.AF_UNIX,
) -> list[int] | None:
    """The client inodes of the connections in ``listener``'s accept queue, head first.

    0 marks a connection whose client has closed its socket: a dead one. None when
    sock_diag cannot tell (no unix_diag in the kernel, EPERM in a container, any
    netlink error or malformed reply), so the caller falls back to other means; also
    None for a socket that is not listening, which has no accept queue ([] would claim
    an empty one), and for a queue too long for one reply (about 2000 connections, far
    beyond the backlog healer uses). ``netlink_protocol`` and ``diag_family`` exist so a
    test can have the kernel refuse the request; callers leave them alone.
    """
    return _icons(_query(listener, UDIAG_SHOW_ICONS, netlink_protocol, diag_family))


def pending(
    listener: socket.socket,
    *,
    netlink_protocol: int = NETLINK_SOCK_DIAG,
    diag_family: int = socket.AF_UNIX,
) -> int | None:
    """How many connections wait in ``listener``'s accept queue, live or dead.

    For metrics and status; None as for :func:`queued` (for a socket that is not
    listening the kernel's count would be bytes in its receive queue, not connections).
    """
    return _rqueue(_query(listener, UDIAG_SHOW_RQLEN, netlink_protocol, diag_family))


def drain_dead(
    listener: socket.socket,
    *,
    netlink_protocol: int = NETLINK_SOCK_DIAG,
    diag_family: int = socket.AF_UNIX,
) -> Drained | None:
    """Accept and close the dead connections at the head of ``listener``'s queue.

    Call it before starting a virtiofsd, so the daemon's one accept gets a live client
    (or waits for one) instead of a dead connection it would exit on. Only the head
    matters: the first live connection stops the drain and stays queued, with any dead
    ones behind it, because virtiofsd accepts just one. None when :func:`queued` is None.

    Why this never accepts a live connection: it accepts exactly as many connections as
    the queue's leading zeros, non-blocking. The accept queue is FIFO and new
    connections join its tail, so those accepts take exactly the connections seen
    dead, provided nothing else accepts on the socket meanwhile, which the caller
    guarantees (no virtiofsd is running for that share). A dead connection stays dead:
    a closed client socket cannot get its inode back, and a live client that closes
    later only turns a live entry into a dead one. Each accepted connection is checked
    anyway (POLLHUP: the client closed, which also holds for a client that wrote
    before it died); one that is not dead is closed too, counted in
    ``unexpected_live``, and ends the drain, since the guarantee did not hold.
    """
    dropped = 0
    for _ in range(_DRAIN_ROUNDS):
        inodes = queued(listener, netlink_protocol=netlink_protocol, diag_family=diag_family)
        if inodes is None:
            return None if dropped == 0 else Drained(dropped)
        dead = _leading_zeros(inodes)
        if dead == 0:
            break
        accepted, live = _accept_and_close(listener, dead)
        dropped += accepted - live
        if live or accepted < dead:
            return Drained(dropped, live)
    return Drained(dropped)


def _leading_zeros(inodes: list[int]) -> int:
    count = 0
    for ino in inodes:
        if ino != 0:
            break
        count += 1
    return count


def _accept_and_close(listener: socket.socket, count: int) -> tuple[int, int]:
    """Accept up to ``count`` connections without blocking; (accepted, not dead)."""
    accepted = live = 0
    timeout = listener.gettimeout()
    listener.setblocking(False)
    try:
        for _ in range(count):
            try:
                conn, _addr = listener.accept()
            except (BlockingIOError, InterruptedError):
                break  # fewer than seen: someone else accepted, contrary to the contract
            with conn:
                accepted += 1
                if not _is_dead(conn):
                    live += 1
                    break
    finally:
        listener.settimeout(timeout)  # the fd's O_NONBLOCK is shared with virtiofsd
    return accepted, live


def _is_dead(conn: socket.socket) -> bool:
    """Whether the client closed: POLLHUP, set when the peer's socket was released.

    Not EOF from a peek: a client that wrote before dying leaves data to read, and a
    live client that only shut down its write side reads as EOF too.
    """
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    return any(revents & select.POLLHUP for _fd, revents in poller.poll(0))


def _icons(attrs: dict[int, bytes] | None) -> list[int] | None:
    """The UNIX_DIAG_ICONS array of a parsed reply (absent: the socket is not listening)."""
    icons = None if attrs is None else attrs.get(UNIX_DIAG_ICONS)
    if icons is None or len(icons) % 4:
        return None
    return list(struct.unpack(f"={len(icons) // 4}I", icons))


def _rqueue(attrs: dict[int, bytes] | None) -> int | None:
    """udiag_rqueue of the UNIX_DIAG_RQLEN attribute of a parsed reply."""
    rqlen = None if attrs is None else attrs.get(UNIX_DIAG_RQLEN)
    if rqlen is None or len(rqlen) != _RQLEN.size:
        return None
    rqueue, _backlog = _RQLEN.unpack(rqlen)
    return int(rqueue)


def _query(
    listener: socket.socket, show: int, netlink_protocol: int, diag_family: int
) -> dict[int, bytes] | None:
    """The attributes of the kernel's reply about ``listener``, or None."""
    sent = _request(listener, show, netlink_protocol, diag_family)
    return None if sent is None else _parse_reply(*sent)


def _request(
    listener: socket.socket, show: int, netlink_protocol: int, diag_family: int
) -> tuple[bytes, int] | None:
    """One exact-lookup request about ``listener``: (raw reply, listener inode), or None."""
    if listener.family != socket.AF_UNIX:
        return None
    try:
        ino = os.fstat(listener.fileno()).st_ino
    except OSError:
        return None  # closed socket
    if not 0 < ino <= 0xFFFFFFFF:
        return None
    req = _UNIX_DIAG_REQ.pack(
        diag_family & 0xFF, 0, 0, _ALL_STATES, ino, show, _NO_COOKIE, _NO_COOKIE
    )
    msg = _NLMSGHDR.pack(_NLMSGHDR.size + len(req), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, _SEQ, 0)
    try:
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink_protocol) as nl:
            nl.settimeout(_TIMEOUT_S)
            nl.sendto(msg + req, (0, 0))
            reply, _anc, flags, _addr = nl.recvmsg(_RECV_BYTES)
    except (OSError, ValueError, OverflowError):
        return None
    if flags & socket.MSG_TRUNC:
        return None
    return reply, ino


def _parse_reply(reply: bytes, ino: int) -> dict[int, bytes] | None:
    """The attributes of a SOCK_DIAG_BY_FAMILY reply about a listener ``ino``, checked.

    Every length is checked before use: anything short, inconsistent, of another
    type, about another socket or about a socket not listening gives None.
    """
    if len(reply) < _NLMSGHDR.size:
        return None
    nlmsg_len, nlmsg_type, _flags, seq, _pid = _NLMSGHDR.unpack_from(reply)
    if seq != _SEQ or not _NLMSGHDR.size <= nlmsg_len <= len(reply):
        return None
    if nlmsg_type != SOCK_DIAG_BY_FAMILY:  # NLMSG_ERROR: a negative errno, e.g. ENOENT
        return None
    body = reply[_NLMSGHDR.size : nlmsg_len]
    if len(body) < _UNIX_DIAG_MSG.size:
        return None
    family, _type, state, _pad, reply_ino, _c0, _c1 = _UNIX_DIAG_MSG.unpack_from(body)
    if family != socket.AF_UNIX or reply_ino != ino or state != TCP_LISTEN:
        return None
    attrs: dict[int, bytes] = {}
    offset = _UNIX_DIAG_MSG.size
    while offset < len(body):
        if len(body) - offset < _NLATTR.size:
            return None
        nla_len, nla_type = _NLATTR.unpack_from(body, offset)
        if nla_len < _NLATTR.size or offset + nla_len > len(body):
            return None
        attrs[nla_type & _NLA_TYPE_MASK] = body[offset + _NLATTR.size : offset + nla_len]
        offset += (nla_len + 3) & ~3
    return attrs
