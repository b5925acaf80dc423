"""pread + send through one reused buffer: the portable fallback.

Every byte crosses into user space and back (two copies), which is what the
zero-copy engines are measured against (read_send = 100% in ``zcopy bench``).
It needs nothing of the file but pread(2) (any regular file or block
device, on any filesystem) and nothing of the socket but write(2), so it is
the engine of last resort, and the one for a transport that must see every
byte (``zcopy.transport``: TLS without kTLS), whose ``send`` it then calls. Each transfer holds one buffer from the engine's ``BufferPool`` and
``preadv``s into it, so no chunk allocates a new bytes object; unsent bytes
stay in the buffer across EAGAIN and go out first on the next step.
"""

from __future__ import annotations

import os

from zcopy.engines.base import EngineStats, FileShrank, Progress
from zcopy.engines.buffers import BufferPool

#: Bytes read per pread: large enough to amortise the syscalls, small enough for L2.
DEFAULT_CHUNK = 256 << 10


class ReadSendEngine:
    name = "read_send"
    zero_copy = False
    send_once = None          # a transfer keeps state between calls

    def __init__(self, *, budget: int = 1 << 20, chunk: int = DEFAULT_CHUNK) -> None:
        self.budget = budget
        self.stats = EngineStats()
        self.buffers = BufferPool(chunk)

    def start_send(self, file_fd: int, offset: int, count: int) -> "ReadSendTransfer":
        return ReadSendTransfer(self, file_fd, offset, count)

    def close(self) -> None:
        self.buffers.close()


class ReadSendTransfer:
    __slots__ = ("offset", "remaining", "_fd", "_budget", "_stats", "_pool", "_buf", "_whole", "_pos", "_end")

    def __init__(self, engine: ReadSendEngine, file_fd: int, offset: int, count: int) -> None:
        self.offset = offset       # next file offset to read
        self.remaining = count     # bytes not yet sent, including those read into the buffer
        self._fd = file_fd
        self._budget = engine.budget
        self._stats = engine.stats
        self._pool = engine.buffers
        self._buf = engine.buffers.acquire() if count else None
        self._whole = [self._buf]  # preadv's buffer list, built once
        self._pos = self._end = 0  # unsent bytes are _buf[_pos:_end]

    def step(self, sock_fd) -> Progress:
        """``sock_fd``: a socket fd, or a transport whose ``send`` takes the
        bytes (one that cannot take sendfile/splice: TLS without kTLS)."""
        buf = self._buf
        stats = self._stats
        budget = self._budget
        write = None if sock_fd.__class__ is int else sock_fd.send
        while self.remaining:
            if self._pos < self._end:
                stats.syscalls += 1
                try:
                    if write is None:
                        n = os.write(sock_fd, buf[self._pos:self._end])
                    else:
                        n = write(memoryview(buf)[self._pos:self._end])   # no copy of the chunk
                except BlockingIOError:
                    return Progress.BLOCKED
                self._pos += n
                self.remaining -= n
                stats.bytes_sent += n
                continue
            if budget <= 0:
                return Progress.MORE
            # The buffer is empty, so every remaining byte is still unread.
            want = min(self.remaining, budget)
            stats.syscalls += 1
            got = os.preadv(self._fd, self._whole if want >= len(buf) else [buf[:want]], self.offset)
            if got == 0:
                raise FileShrank(f"file ended at offset {self.offset} with {self.remaining} bytes "
                                 f"still promised (truncated during read_send)")
            self.offset += got
            self._pos, self._end = 0, got
            budget -= got
        return Progress.DONE

    def close(self) -> None:
        if self._buf is not None:
            self._pool.release(self._buf)
            self._buf = None
            self._whole = None
