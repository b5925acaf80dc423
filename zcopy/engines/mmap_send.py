"""mmap + send: map a window of the file and send from the mapping.

The socket copies the bytes out of the mapping (one copy, in the kernel,
instead of read+send's two), so this is not zero-copy, but it needs no
user-space buffer. Windows keep memory flat, as the seed design does: map
``window`` bytes, send them, then ``madvise(MADV_DONTNEED)`` and unmap so the
process never holds page-table entries for a whole large file.

A file truncated under a mapping is the danger: touching a page past the new
end raises SIGBUS in user space. zcopy never touches the pages itself, the
kernel does inside send(), where the same fault becomes EFAULT. Two guards:
``fstat`` before mapping each window (the common case, a clear error before
any syscall on the socket) and EFAULT from the send turned into
``FileShrank`` (the race where the file shrinks mid-window).
"""

from __future__ import annotations

import errno
import mmap
import os

from zcopy.engines.base import EngineStats, FileShrank, Progress

#: Bytes mapped at a time.
DEFAULT_WINDOW = 4 << 20

_GRANULE = mmap.ALLOCATIONGRANULARITY


class MmapSendEngine:
    name = "mmap_send"
    zero_copy = False
    send_once = None          # a transfer keeps state between calls

    def __init__(self, *, budget: int = 1 << 20, window: int = DEFAULT_WINDOW) -> None:
        self.budget = budget
        self.window = max(_GRANULE, window - window % _GRANULE)
        self.stats = EngineStats()

    def start_send(self, file_fd: int, offset: int, count: int) -> "MmapSendTransfer":
        return MmapSendTransfer(self, file_fd, offset, count)

    def close(self) -> None:
        """Nothing pooled."""


class MmapSendTransfer:
    __slots__ = ("offset", "remaining", "_fd", "_budget", "_window", "_stats", "_map", "_view", "_pos")

    def __init__(self, engine: MmapSendEngine, file_fd: int, offset: int, count: int) -> None:
        self.offset = offset
        self.remaining = count
        self._fd = file_fd
        self._budget = engine.budget
        self._window = engine.window
        self._stats = engine.stats
        self._map: mmap.mmap | None = None
        self._view: memoryview | None = None  # the mapped window
        self._pos = 0                          # next byte of the window to send

    def step(self, sock_fd: int) -> Progress:
        budget = self._budget
        stats = self._stats
        while self.remaining:
            if budget <= 0:
                return Progress.MORE
            if self._view is None:
                self._map_window()
            view = self._view
            stats.syscalls += 1
            try:
                n = os.write(sock_fd, view[self._pos:self._pos + budget])
            except BlockingIOError:
                return Progress.BLOCKED
            except OSError as exc:
                if exc.errno == errno.EFAULT:
                    raise FileShrank(f"file shrank under the mapping near offset {self.offset}") from None
                raise
            self._pos += n
            self.offset += n
            self.remaining -= n
            budget -= n
            stats.bytes_sent += n
            if self._pos == len(view):
                self._unmap()
        return Progress.DONE

    def _map_window(self) -> None:
        start = self.offset - self.offset % _GRANULE  # mmap offsets must be page aligned
        skip = self.offset - start
        length = min(self._window, skip + self.remaining)
        self._stats.syscalls += 2  # fstat + mmap
        if os.fstat(self._fd).st_size < start + length:
            raise FileShrank(f"file is shorter than offset {self.offset} + {length - skip} bytes "
                             f"(truncated during mmap_send)")
        self._map = mmap.mmap(self._fd, length, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ, offset=start)
        self._view = memoryview(self._map)[skip:]
        self._pos = 0

    def _unmap(self) -> None:
        if self._map is None:
            return
        self._view.release()
        self._view = None
        self._stats.syscalls += 2  # madvise + munmap
        self._map.madvise(mmap.MADV_DONTNEED)
        self._map.close()
        self._map = None

    def close(self) -> None:
        self._unmap()
