"""MSG_ZEROCOPY (Documentation/networking/msg_zerocopy.rst): does the kernel
accept SO_ZEROCOPY and deliver completion notifications?

Sends one 64 KiB buffer with MSG_ZEROCOPY on a loopback TCP pair, lets the
peer read it, then reads the completion from the error queue
(recvmsg MSG_ERRQUEUE, a sock_extended_err with origin
SO_EE_ORIGIN_ZEROCOPY). On loopback the kernel must copy the pages for the
receiver, so the completion carries SO_EE_CODE_ZEROCOPY_COPIED: that is
expected here and says nothing about a real NIC.
"""

from __future__ import annotations

import select
import socket
import struct
from typing import Iterator

from probes.finding import Finding, Status
from probes.kernel import errname
from probes.resources import Resources
from probes.sendfile import recv_exactly

SO_ZEROCOPY = 60
MSG_ZEROCOPY = 0x4000000
MSG_ERRQUEUE = 0x2000
SO_EE_ORIGIN_ZEROCOPY = 5
SO_EE_CODE_ZEROCOPY_COPIED = 1
EXTENDED_ERR = struct.Struct("=IBBBBII")   # ee_errno, origin, type, code, pad, info, data
SIZE = 64 * 1024
WAIT = 1.0


def probe(ctx) -> Iterator[Finding]:
    fid = "msg_zerocopy.completion"
    value = {"so_zerocopy": False, "completion": False, "copied": None}
    with Resources() as res:
        client, server = res.tcp_pair()
        try:
            client.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
        except OSError as exc:
            yield Finding(fid, Status.UNSUPPORTED, value, f"setsockopt(SO_ZEROCOPY) failed: {errname(exc)}")
            return
        value["so_zerocopy"] = True
        try:
            client.send(b"z" * SIZE, MSG_ZEROCOPY)
        except OSError as exc:
            yield Finding(fid, Status.UNSUPPORTED, value, f"send(MSG_ZEROCOPY) failed: {errname(exc)}")
            return
        recv_exactly(server, SIZE)
        note = _completion(client)
    if note is None:
        yield Finding(fid, Status.DEGRADED, value, f"SO_ZEROCOPY accepted but no completion arrived within {WAIT:g} s")
        return
    value.update(completion=True, copied=note)
    yield Finding(fid, Status.OK, value, "SO_ZEROCOPY accepted and a MSG_ZEROCOPY completion arrived on the error "
                  f"queue ({'kernel copied: expected on loopback' if note else 'pages were not copied'})")


def _completion(sock: socket.socket) -> bool | None:
    """Wait for the zerocopy notification; True if it says the kernel copied."""
    poller = select.poll()
    poller.register(sock, select.POLLERR)
    if not poller.poll(WAIT * 1000):
        return None
    _, ancdata, _, _ = sock.recvmsg(0, 1024, MSG_ERRQUEUE)
    for _level, _type, data in ancdata:
        if len(data) >= EXTENDED_ERR.size:
            _, origin, _, code, _, _, _ = EXTENDED_ERR.unpack_from(data)
            if origin == SO_EE_ORIGIN_ZEROCOPY:
                return bool(code & SO_EE_CODE_ZEROCOPY_COPIED)
    return None
