"""Reusable byte buffers for the engines that copy through user space.

read_send and recv_pwrite need a buffer per transfer (a transfer may stop on
EAGAIN with unsent bytes in it, so two transfers cannot share one). Making a
fresh ``bytearray`` per transfer, let alone per chunk, is garbage the hot path
does not need: a transfer takes a buffer when it starts and gives it back on
close, and a few idle buffers are kept for the next transfer.
"""

from __future__ import annotations


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
