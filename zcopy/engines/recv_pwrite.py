"""recv + pwrite through one reused buffer: the portable upload path.

The mirror of read_send: bytes come off the socket into a buffer and are
written at an explicit file offset, so several uploads (or ranges of one)
can write into one file without sharing a file position. The socket is read
with ``readv`` into the buffer (the fd-level equivalent of
``socket.recv_into``: the engine interface hands out fds, not socket objects).

The two halves are a ``BufferSlot`` (``zcopy.engines.buffers``): ``new_slot``
gives one to a caller that fills it on its event loop and writes it out
elsewhere (the server: a pool thread, ``zcopy.server.spool``). ``start_recv``'s
transfer does both in turn on the caller's thread: a regular file does not
return EAGAIN, so each chunk is fully written before the next read.
"""

from __future__ import annotations

from zcopy.engines.base import EngineStats, PeerClosed, Progress, check_positional
from zcopy.engines.buffers import BufferPool, BufferSlot

#: The buffer a slot holds. 1 MiB, not the 256 KiB of the send side: in the server each full slot is
#: one write task on a pool thread, a hop that costs eventfd and GIL hand-overs (docs/serve.md,
#: "Bodies off the loop": 1,028 tasks and 8,784 futex calls for 256 MiB at 256 KiB, 259 and 2,050 at 1 MiB).
DEFAULT_CHUNK = 1 << 20


class RecvPwriteEngine:
    name = "recv_pwrite"
    zero_copy = False

    def __init__(self, *, budget: int = 1 << 20, chunk: int = DEFAULT_CHUNK) -> None:
        self.budget = budget
        self.stats = EngineStats()
        self.buffers = BufferPool(chunk)

    def new_slot(self) -> BufferSlot:
        """A buffer to fill from a socket and write out later (on the loop; ``release`` it there)."""
        return BufferSlot(self.buffers, self.stats)

    def start_recv(self, file_fd: int, offset: int, count: int) -> "RecvPwriteTransfer":
        check_positional(file_fd)
        return RecvPwriteTransfer(self, file_fd, offset, count)

    def close(self) -> None:
        self.buffers.close()


class RecvPwriteTransfer:
    __slots__ = ("offset", "remaining", "_fd", "_budget", "_stats", "_slot")

    def __init__(self, engine: RecvPwriteEngine, file_fd: int, offset: int, count: int) -> None:
        self.offset = offset       # next file offset to write
        self.remaining = count     # bytes still expected from the socket
        self._fd = file_fd
        self._budget = engine.budget
        self._stats = engine.stats
        self._slot = engine.new_slot() if count else None

    def step(self, sock_fd: int) -> Progress:
        slot = self._slot
        budget = self._budget
        while self.remaining:
            if budget <= 0:
                return Progress.MORE
            try:
                got = slot.fill(sock_fd, min(self.remaining, budget))
            except BlockingIOError:
                return Progress.BLOCKED
            if got == 0:
                raise PeerClosed(f"peer closed with {self.remaining} bytes still expected")
            self._stats.syscalls += slot.write_to(self._fd, self.offset)
            self.offset += got
            self.remaining -= got
            budget -= got
        return Progress.DONE

    def close(self) -> None:
        if self._slot is not None:
            self._slot.release()
            self._slot = None
