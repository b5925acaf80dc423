"""recv_into + send through a reused buffer: the relay's fallback when splice
between sockets is not available (``zcopy relay --engine copy``).

Every byte crosses into user space and back, as with read_send. A channel
takes a buffer from the engine's ``BufferPool`` when it reads and gives it
back as soon as a send empties it, so an idle connection holds none; unsent
bytes stay in the buffer across EAGAIN and go out first. ``MSG_MORE`` is set
on the send when the last read filled the buffer (the sender had more queued),
as the splice channel sets SPLICE_F_MORE.
"""

from __future__ import annotations

import socket

from zcopy.engines.base import Channel, EngineStats
from zcopy.engines.buffers import BufferPool

#: Buffer size when none is given: the relay's default pipe size.
DEFAULT_CHUNK = 1 << 20
_MSG_MORE = int(socket.MSG_MORE)     # a plain int: a transport may test it (``&`` on the IntFlag runs enum.py)


class CopyEngine:
    name = "copy"
    zero_copy = False

    def __init__(self, *, chunk: int = DEFAULT_CHUNK, max_idle: int = 64) -> None:
        self.stats = EngineStats()
        self.buffers = BufferPool(chunk, max_idle=max_idle)

    def start_relay(self, src: socket.socket, dst: socket.socket) -> "CopyRelay":
        return CopyRelay(self, src, dst)

    def close(self) -> None:
        self.buffers.close()


class CopyRelay(Channel):
    """One direction of a relayed connection: ``src`` socket -> buffer -> ``dst`` socket."""

    __slots__ = ("_pool", "_src", "_dst", "buf", "start")

    def __init__(self, engine: CopyEngine, src: socket.socket, dst: socket.socket) -> None:
        super().__init__(engine.stats, engine.buffers.size)
        self._pool = engine.buffers
        self._src = src
        self._dst = dst
        self.buf = None
        self.start = 0            # unsent bytes are buf[start:start + pending]

    def _take(self) -> None:
        if self.buf is None:
            self.buf = self._pool.acquire()
        self.start = 0

    def _read(self, want: int) -> int:
        return self._src.recv_into(self.buf, want)

    def _write(self, more: bool) -> int:
        start = self.start
        n = self._dst.send(self.buf[start:start + self.pending], _MSG_MORE if more else 0)
        self.start = start + n
        return n

    def close(self) -> None:
        if self.buf is not None:
            self._pool.release(self.buf)
            self.buf = None
