"""recv + pwrite through one reused buffer: the portable upload path.

The mirror of read_send: bytes come off the socket into the transfer's
buffer and are written at an explicit file offset, so several uploads (or
ranges of one) can write into one file without sharing a file position.
The socket is read with ``readv`` into the buffer (the fd-level equivalent of
``socket.recv_into``: the engine interface hands out fds, not socket objects).
A regular file does not return EAGAIN, so each chunk is fully written before
the next read.
"""

from __future__ import annotations

import errno
import os

from zcopy.engines.base import EngineStats, PeerClosed, Progress, check_positional
from zcopy.engines.buffers import BufferPool

DEFAULT_CHUNK = 256 << 10


class RecvPwriteEngine:
    name = "recv_pwrite"
    zero_copy = False

    def __init__(self, *, budget: int = 1 << 20, chunk: int = DEFAULT_CHUNK) -> None:
        self.budget = budget
        self.stats = EngineStats()
        self.buffers = BufferPool(chunk)

    def start_recv(self, file_fd: int, offset: int, count: int) -> "RecvPwriteTransfer":
        check_positional(file_fd)
        return RecvPwriteTransfer(self, file_fd, offset, count)

    def close(self) -> None:
        self.buffers.close()


class RecvPwriteTransfer:
    __slots__ = ("offset", "remaining", "_fd", "_budget", "_stats", "_pool", "_buf", "_whole")

    def __init__(self, engine: RecvPwriteEngine, file_fd: int, offset: int, count: int) -> None:
        self.offset = offset       # next file offset to write
        self.remaining = count     # bytes still expected from the socket
        self._fd = file_fd
        self._budget = engine.budget
        self._stats = engine.stats
        self._pool = engine.buffers
        self._buf = engine.buffers.acquire() if count else None
        self._whole = [self._buf]

    def step(self, sock_fd: int) -> Progress:
        buf = self._buf
        stats = self._stats
        budget = self._budget
        while self.remaining:
            if budget <= 0:
                return Progress.MORE
            want = min(self.remaining, budget)
            stats.syscalls += 1
            try:
                got = os.readv(sock_fd, self._whole if want >= len(buf) else [buf[:want]])
            except BlockingIOError:
                return Progress.BLOCKED
            if got == 0:
                raise PeerClosed(f"peer closed with {self.remaining} bytes still expected")
            stats.bytes_received += got
            done = 0
            while done < got:
                stats.syscalls += 1
                n = os.pwrite(self._fd, buf[done:got], self.offset + done)
                if n == 0:  # pwrite to a regular file never returns 0; never spin if it does
                    raise OSError(errno.EIO, "pwrite wrote nothing")
                done += n
            self.offset += got
            self.remaining -= got
            budget -= got
        return Progress.DONE

    def close(self) -> None:
        if self._buf is not None:
            self._pool.release(self._buf)
            self._buf = None
            self._whole = None
