"""TCP_CORK and MSG_MORE: can the server hold back a header so it leaves in
the same segment as the first file bytes (tcp(7), send(2))?

Observed, not assumed: small writes on a corked socket (or sent with
MSG_MORE) must not be readable by the peer within 50 ms, and must arrive
once the cork is pulled (or a send without MSG_MORE follows).
"""

from __future__ import annotations

import select
import socket
from typing import Iterator

from probes.finding import Finding, Status
from probes.kernel import errname
from probes.resources import Resources

WAIT = 0.05


def probe(ctx) -> Iterator[Finding]:
    yield _check("tcp_cork.cork", "TCP_CORK", _cork, _uncork)
    yield _check("tcp_cork.msg_more", "MSG_MORE", _msg_more, _send_last)


def _readable(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], WAIT)[0])


def _cork(client: socket.socket) -> None:
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
    client.send(b"h" * 100)
    client.send(b"b" * 100)


def _uncork(client: socket.socket) -> None:
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)


def _msg_more(client: socket.socket) -> None:
    client.send(b"h" * 100, socket.MSG_MORE)


def _send_last(client: socket.socket) -> None:
    client.send(b"b" * 100)


def _check(fid: str, what: str, hold, release) -> Finding:
    with Resources() as res:
        client, server = res.tcp_pair()
        try:
            hold(client)
        except OSError as exc:
            return Finding(fid, Status.UNSUPPORTED, {"held": False, "released": False},
                           f"{what} refused: {errname(exc)}")
        held = not _readable(server)
        release(client)
        released = _readable(server) and len(server.recv(4096)) > 0
    value = {"held": held, "released": released}
    if held and released:
        return Finding(fid, Status.OK, value, f"{what}: small writes were held back for {WAIT * 1000:.0f} ms "
                       "and left together once released")
    return Finding(fid, Status.DEGRADED, value, f"{what} accepted but writes were "
                   f"{'held' if held else 'sent at once'} and {'released' if released else 'not released'}")
