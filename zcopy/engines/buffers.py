"""Reusable byte buffers for the engines that copy through user space.

read_send and recv_pwrite need a buffer per transfer (a transfer may stop on
EAGAIN with unsent bytes in it, so two transfers cannot share one). Making a
fresh ``bytearray`` per transfer, let alone per chunk, is garbage the hot path
does not need: a transfer takes a buffer when it starts and gives it back on
close, and a few idle buffers are kept for the next transfer.
"""

from __future__ import annotations

import errno
import os


class BufferPool:
    def __init__(self, size: int, max_idle: int = 16) -> None:
        self.size = size
        self.max_idle = max_idle
        self._idle: list[memoryview] = []

    def acquire(self) -> memoryview:
        """A writable view of ``size`` bytes (contents undefined)."""
        return self._idle.pop() if self._idle else memoryview(bytearray(self.size))

    def release(self, buf: memoryview) -> None:
        if len(self._idle) < self.max_idle:
            self._idle.append(buf)

    def close(self) -> None:
        self._idle.clear()


class BufferSlot:
    """A buffer between the socket (or bytes the process holds) and a file, in two halves: it is
    filled on the event loop (``fill``: readv from the non-blocking socket; ``put``: a copy of bytes)
    and written out at a file offset by whoever may block on the disk (``write_to``: pwrite, a pool
    thread's in the server). ``pending`` bytes are held; ``space`` more fit. The owner hands it to
    one side at a time, and gives it back (``release``) on the loop, which owns the pool."""

    __slots__ = ("buf", "pending", "_pool", "_stats")

    def __init__(self, pool: BufferPool, stats) -> None:
        self._pool = pool
        self._stats = stats             # the engine's counters, bumped on the loop only (fill)
        self.buf = pool.acquire()
        self.pending = 0

    @property
    def space(self) -> int:
        return len(self.buf) - self.pending

    def fill(self, sock_fd: int, want: int) -> int:
        """(loop) Read at most ``want`` bytes from the socket into the free space: how many
        (0: the peer's EOF); ``BlockingIOError`` when it has none now."""
        at = self.pending
        self._stats.syscalls += 1
        n = os.readv(sock_fd, [self.buf[at:at + min(want, len(self.buf) - at)]])
        self.pending = at + n
        self._stats.bytes_received += n
        return n

    def put(self, data) -> int:
        """(loop) Copy as much of ``data`` as fits: how many bytes."""
        at = self.pending
        n = min(len(data), len(self.buf) - at)
        self.buf[at:at + n] = data[:n]
        self.pending = at + n
        return n

    def write_to(self, fd: int, offset: int) -> int:
        """(may block) Write every held byte at ``offset`` of ``fd``; the slot is empty after.
        Returns the number of syscalls (the caller counts them where the counters live)."""
        buf, done, count, calls = self.buf, 0, self.pending, 0
        while done < count:
            calls += 1
            n = os.pwrite(fd, buf[done:count], offset + done)
            if n == 0:  # pwrite to a regular file never returns 0; never spin if it does
                raise OSError(errno.EIO, "pwrite wrote nothing")
            done += n
        self.pending = 0
        return calls

    def release(self) -> None:
        """(loop) The buffer back to its pool (its contents do not matter)."""
        if self.buf is not None:
            self._pool.release(self.buf)
            self.buf = None
