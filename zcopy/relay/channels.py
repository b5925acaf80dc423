"""Where one direction's bytes wait between reading and writing.

A channel has two moves, ``fill(src, want)`` (read at most ``want`` bytes
from the source socket; 0 means EOF) and ``flush(dst, more)`` (write what it
holds; may be partial), and a ``pending`` count. The pump only fills an
*empty* channel, so bytes already taken from one socket always leave before
more are read: nothing is reordered.

A channel holds its pipe or buffer only while bytes are in it: it takes one
from the worker's pool on ``fill`` and gives it back when a flush empties
it. An idle connection (the common case for most of 500 open ones) holds no
pipe fds and no pipe pages, and a busy one gets the same warm pipe back
from the top of the pool. ``release`` on close hands back what is left; the
pool closes a pipe that still holds bytes instead of reusing it.

``BlockingIOError`` (EAGAIN) and the socket's ``OSError`` propagate; the
pump decides what they mean. Running out of fds for a pipe is a different
thing (not the peer's fault) and raises ``NoChannel``.
"""

from __future__ import annotations

import os
import socket

from zcopy.engines.buffers import BufferPool
from zcopy.pipes import PipePool

_SPLICE = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
_SPLICE_MORE = _SPLICE | os.SPLICE_F_MORE
_MSG_MORE = socket.MSG_MORE


class NoChannel(Exception):
    """The pool could not make a pipe (EMFILE, ENFILE, ENOMEM)."""

    def __init__(self, exc: OSError) -> None:
        super().__init__(str(exc))
        self.exc = exc


class SpliceChannel:
    """socket -> pipe -> socket with splice(2): the bytes stay in the kernel.

    With the pipe empty, EAGAIN from the socket -> pipe splice can only mean
    the socket has nothing to read. SPLICE_F_MORE is passed on the way out
    only when the pipe was filled to capacity (the sender had more queued):
    TCP then builds full segments, and the tail of an interactive exchange
    is never held back.
    """

    __slots__ = ("pool", "pipe", "size", "pending")
    name = "splice"

    def __init__(self, pool: PipePool) -> None:
        self.pool = pool
        self.pipe = None
        self.size = pool.size
        self.pending = 0

    def fill(self, src, want: int) -> int:
        pipe = self.pipe
        if pipe is None:
            try:
                pipe = self.pipe = self.pool.acquire()
            except OSError as exc:
                raise NoChannel(exc) from None
            self.size = pipe.size       # smaller when the pipe budget is spent
        try:
            n = os.splice(src.fd, pipe.w, min(want, pipe.size), flags=_SPLICE)
        except OSError:
            self.release()
            raise
        if n == 0:
            self.release()
        self.pending = n
        return n

    def flush(self, dst, more: bool) -> int:
        n = os.splice(self.pipe.r, dst.fd, self.pending, flags=_SPLICE_MORE if more else _SPLICE)
        self.pending -= n
        if not self.pending:
            self.release()
        return n

    def release(self) -> None:
        """Back to the pool (closed instead if bytes are still in it). Idempotent."""
        pipe = self.pipe
        if pipe is not None:
            self.pipe = None
            pipe.pending = self.pending
            self.pool.release(pipe)


class CopyChannel:
    """recv_into + send through a reused buffer: the fallback when splice
    between sockets is not available."""

    __slots__ = ("pool", "buf", "size", "start", "pending")
    name = "copy"

    def __init__(self, pool: BufferPool) -> None:
        self.pool = pool
        self.buf = None
        self.size = pool.size
        self.start = 0
        self.pending = 0

    def fill(self, src, want: int) -> int:
        buf = self.buf
        if buf is None:
            buf = self.buf = self.pool.acquire()
        try:
            n = src.sock.recv_into(buf, want)
        except OSError:
            self.release()
            raise
        if n == 0:
            self.release()
        self.start = 0
        self.pending = n
        return n

    def flush(self, dst, more: bool) -> int:
        start = self.start
        n = dst.sock.send(self.buf[start:start + self.pending], _MSG_MORE if more else 0)
        self.start = start + n
        self.pending -= n
        if not self.pending:
            self.release()
        return n

    def release(self) -> None:
        if self.buf is not None:
            self.pool.release(self.buf)
            self.buf = None
