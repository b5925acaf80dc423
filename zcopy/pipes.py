"""A pool of resized, non-blocking pipes for the splice engine.

splice(2) needs a pipe between the file and the socket. Creating one costs
two fds and a ``pipe2`` + ``fcntl(F_SETPIPE_SZ)`` per transfer, so pipes are
kept and reused. Only an *empty* pipe may go back to the pool: a pipe that
still holds bytes from an aborted transfer would leak them into the next
response, so it is closed instead.

The kernel charges pipe buffers to the user (``/proc/sys/fs/pipe-user-pages-
soft`` and ``-hard``). When that budget is spent, F_SETPIPE_SZ fails with
EPERM (or ENOMEM under memory pressure); the pool then keeps the smaller pipe
it got, which still works, and counts it in ``shrunk`` so the stats layer can
say why throughput dropped.
"""

from __future__ import annotations

import errno
import fcntl
import os

_SHRINK_ERRNOS = (errno.EPERM, errno.ENOMEM)


class Pipe:
    """One pipe: read end ``r``, write end ``w``, capacity ``size`` and the
    number of bytes the owner has put in and not yet taken out (``pending``).

    ``pending`` is bookkeeping by the user of the pipe (the kernel has no
    cheap "bytes in pipe" query besides FIONREAD): the pool trusts it to
    decide whether the pipe is clean enough to reuse.
    """

    __slots__ = ("r", "w", "size", "pending")

    def __init__(self, r: int, w: int, size: int) -> None:
        self.r = r
        self.w = w
        self.size = size
        self.pending = 0

    def close(self) -> None:
        """Close both ends. Idempotent."""
        for fd in (self.r, self.w):
            if fd >= 0:
                os.close(fd)
        self.r = self.w = -1

    @property
    def closed(self) -> bool:
        return self.r < 0


class PipePool:
    """Hands out O_NONBLOCK|O_CLOEXEC pipes of (at least, when allowed) ``size``
    bytes and keeps up to ``max_idle`` empty ones for reuse."""

    def __init__(self, size: int, max_idle: int = 64) -> None:
        if size <= 0:
            raise ValueError(f"pipe size must be positive, not {size}")
        self.size = size
        self.max_idle = max_idle
        self._idle: list[Pipe] = []
        self.created = 0   # pipes made with pipe2()
        self.reused = 0    # acquire() served from the idle list
        self.shrunk = 0    # pipes that kept a smaller size (per-user pipe budget spent)
        self.discarded = 0  # released with bytes inside, closed instead of pooled

    def acquire(self) -> Pipe:
        if self._idle:
            self.reused += 1
            return self._idle.pop()
        return self._new_pipe()

    def release(self, pipe: Pipe) -> None:
        """Return ``pipe``: pooled if empty and there is room, closed otherwise."""
        if pipe.closed:
            return
        if pipe.pending == 0 and len(self._idle) < self.max_idle:
            self._idle.append(pipe)
            return
        if pipe.pending:
            self.discarded += 1
        pipe.close()

    def close(self) -> None:
        """Close every idle pipe. Pipes still acquired are their owner's to release."""
        while self._idle:
            self._idle.pop().close()

    @property
    def idle(self) -> int:
        return len(self._idle)

    def _new_pipe(self) -> Pipe:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            size = fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, self.size)
        except OSError as exc:
            if exc.errno not in _SHRINK_ERRNOS:
                os.close(r)
                os.close(w)
                raise
            size = fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)
            self.shrunk += 1
        self.created += 1
        return Pipe(r, w, size)
