"""splice(2) through a pooled pipe, in both directions.

splice moves pages by reference between a pipe and another fd; one end must
be a pipe, so a file→socket copy is two calls: file→pipe (the pipe now holds
references to page-cache pages) and pipe→socket.

The classic bug: the socket accepts only part of what the pipe holds and
returns EAGAIN. Those bytes are already out of the file (the offset has moved
on) and now live only in the pipe. If the next step refilled the pipe first,
or returned the pipe to a pool, they would be lost or sent to someone else.
So ``Pipe.pending`` is tracked, every step first flushes what the pipe holds,
and ``close`` hands the pipe back to the pool only when it is empty
(``PipePool.release`` closes a non-empty pipe instead).

Receiving (uploads) is the mirror image: socket→pipe, then pipe→file at an
explicit offset, in two halves (``PipeSlot``): the server fills the pipe on its
event loop and empties it into the file on a pool thread (``zcopy.server.spool``);
``start_recv``'s transfer does both in turn. Writing to a regular file does not
return EAGAIN, so a pipe is always drained fully before it is filled again.

Relaying (``zcopy relay``) is socket→pipe→socket: a ``SpliceRelay`` channel
takes a pipe from the pool when it reads and gives it back as soon as a write
empties it, so an idle connection holds no pipe fds and no pipe pages. With
the pipe empty, EAGAIN from socket→pipe can only mean the socket has nothing
to read. SPLICE_F_MORE is passed on the way out only when the pipe was filled
to capacity (the sender had more queued): TCP then builds full segments, and
the tail of an interactive exchange is never held back.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import termios

from zcopy.engines.base import Channel, EngineStats, FileShrank, NoPipe, PeerClosed, Progress, check_positional
from zcopy.pipes import Pipe, PipePool

#: Pipe size when no pool (sized by the pipe.throughput probe) is given.
DEFAULT_PIPE_SIZE = 1 << 20

_NONBLOCK = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
_NONBLOCK_MORE = _NONBLOCK | os.SPLICE_F_MORE


class SpliceEngine:
    name = "splice"
    zero_copy = True
    send_once = None          # a transfer keeps state between calls

    def __init__(self, *, pipe_pool: PipePool | None = None, budget: int = 1 << 20) -> None:
        self.budget = budget
        self.stats = EngineStats()
        self._own_pool = pipe_pool is None
        self.pipe_pool = pipe_pool if pipe_pool is not None else PipePool(DEFAULT_PIPE_SIZE)

    def start_send(self, file_fd: int, offset: int, count: int) -> "SpliceSend":
        return SpliceSend(self, file_fd, offset, count)

    def start_recv(self, file_fd: int, offset: int, count: int) -> "SpliceRecv":
        check_positional(file_fd)
        return SpliceRecv(self, file_fd, offset, count)

    def new_slot(self) -> "PipeSlot":
        """A pooled pipe to fill from a socket and empty into a file later (on the loop; ``release`` it there)."""
        return PipeSlot(self.pipe_pool, self.stats)

    def start_relay(self, src, dst) -> "SpliceRelay":
        return SpliceRelay(self, src, dst)

    def close(self) -> None:
        """Close the pool if this engine made it; a shared pool is its owner's."""
        if self._own_pool:
            self.pipe_pool.close()


class _SpliceTransfer:
    """What both directions share: a pipe held for the transfer's lifetime."""

    __slots__ = ("offset", "remaining", "_fd", "_budget", "_stats", "_pool", "pipe")

    def __init__(self, engine: SpliceEngine, file_fd: int, offset: int, count: int) -> None:
        self.offset = offset        # next file offset to splice into (send) / out of (recv) the pipe
        self.remaining = count      # bytes not yet delivered, including those parked in the pipe
        self._fd = file_fd
        self._budget = engine.budget
        self._stats = engine.stats
        self._pool = engine.pipe_pool
        self.pipe: Pipe | None = engine.pipe_pool.acquire() if count else None

    def close(self) -> None:
        if self.pipe is not None:
            self._pool.release(self.pipe)
            self.pipe = None


class SpliceSend(_SpliceTransfer):
    __slots__ = ()

    def step(self, sock_fd: int) -> Progress:
        pipe = self.pipe
        stats = self._stats
        budget = self._budget
        while self.remaining:
            if pipe.pending:
                # Bytes already taken from the file go out before anything else.
                flags = _NONBLOCK_MORE if self.remaining > pipe.pending else _NONBLOCK
                stats.syscalls += 1
                try:
                    n = os.splice(pipe.r, sock_fd, pipe.pending, flags=flags)
                except BlockingIOError:
                    return Progress.BLOCKED
                pipe.pending -= n
                self.remaining -= n
                stats.bytes_sent += n
                continue
            if budget <= 0:
                return Progress.MORE
            want = min(self.remaining, pipe.size, budget)
            stats.syscalls += 1
            n = os.splice(self._fd, pipe.w, want, offset_src=self.offset, flags=_NONBLOCK)
            if n == 0:
                raise FileShrank(f"file ended at offset {self.offset} with {self.remaining} bytes "
                                 f"still promised (truncated during splice)")
            pipe.pending = n
            self.offset += n
            budget -= n
        return Progress.DONE


class PipeSlot:
    """A pipe between the socket and a file, in two halves: filled from the non-blocking socket on
    the event loop (``fill``: socket->pipe, SPLICE_F_NONBLOCK, as many times as the pipe takes) and
    emptied into the file at an offset by whoever may block on the disk (``write_to``: pipe->file, a
    pool thread's in the server). The bytes never enter the process. EAGAIN from a splice into a
    pipe that already holds bytes means a full pipe or an empty socket, and an edge-triggered reader
    must know which: the socket's unread byte count (SIOCINQ, asked only then) says. A full pipe has
    no ``space`` left, whatever its byte count says (a pipe holds pages, and a socket's bytes may fill
    them partly). Given back (``release``) on the loop, which owns the pool; a pipe that still holds
    bytes is closed."""

    __slots__ = ("pipe", "full", "_pool", "_stats")

    def __init__(self, pool: PipePool, stats: EngineStats) -> None:
        self._pool = pool
        self._stats = stats             # the engine's counters, bumped on the loop only (fill)
        self.pipe = pool.acquire()
        self.full = False

    @property
    def pending(self) -> int:
        return self.pipe.pending

    @property
    def space(self) -> int:
        return 0 if self.full else self.pipe.size - self.pipe.pending

    def fill(self, sock_fd: int, want: int) -> int:
        """(loop) socket -> pipe, at most ``want`` bytes: how many (0: the peer's EOF, or the pipe
        turned out full: ``space`` is 0 then); ``BlockingIOError`` when the socket has none now."""
        pipe = self.pipe
        self._stats.syscalls += 1
        try:
            n = os.splice(sock_fd, pipe.w, min(want, pipe.size - pipe.pending), flags=_NONBLOCK)
        except BlockingIOError:
            if pipe.pending and _unread(sock_fd):
                self.full = True        # the pipe is full, not the socket empty
                return 0
            raise
        pipe.pending += n
        self._stats.bytes_received += n
        return n

    def write_to(self, fd: int, offset: int) -> int:
        """(may block) pipe -> file at ``offset`` until the pipe is empty. Returns the number of
        syscalls (the caller counts them where the counters live)."""
        pipe, calls = self.pipe, 0
        while pipe.pending:
            # A regular file never says EAGAIN: drain the pipe completely.
            calls += 1
            n = os.splice(pipe.r, fd, pipe.pending, offset_dst=offset, flags=os.SPLICE_F_MOVE)
            if n == 0:  # cannot happen with bytes in the pipe; never spin if it does
                raise OSError(errno.EIO, "splice pipe->file moved nothing")
            pipe.pending -= n
            offset += n
        return calls

    def release(self) -> None:
        """(loop) The pipe back to the pool (closed instead if bytes are left in it)."""
        if self.pipe is not None:
            self._pool.release(self.pipe)
            self.pipe = None


def _unread(sock_fd: int) -> int:
    """Bytes waiting in the socket's receive queue (SIOCINQ, the same number as FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(sock_fd, termios.FIONREAD, b"\0\0\0\0"))[0]


class SpliceRecv:
    """socket -> pipe -> file on the caller's thread, one ``PipeSlot`` filled and emptied in turn."""

    __slots__ = ("offset", "remaining", "_fd", "_budget", "_stats", "slot")

    def __init__(self, engine: SpliceEngine, file_fd: int, offset: int, count: int) -> None:
        self.offset = offset        # next file offset to write
        self.remaining = count      # bytes not yet in the file, including those parked in the pipe
        self._fd = file_fd
        self._budget = engine.budget
        self._stats = engine.stats
        self.slot = engine.new_slot() if count else None

    @property
    def pipe(self) -> Pipe | None:
        return None if self.slot is None else self.slot.pipe

    def step(self, sock_fd: int) -> Progress:
        slot = self.slot
        budget = self._budget
        while self.remaining:
            if slot.pending:
                before = slot.pending
                self._stats.syscalls += slot.write_to(self._fd, self.offset)
                self.offset += before
                self.remaining -= before
                continue
            if budget <= 0:
                return Progress.MORE
            try:
                n = slot.fill(sock_fd, min(self.remaining, budget))
            except BlockingIOError:
                return Progress.BLOCKED
            if n == 0:
                raise PeerClosed(f"peer closed with {self.remaining} bytes still expected")
            budget -= n
        return Progress.DONE

    def close(self) -> None:
        if self.slot is not None:
            self.slot.release()
            self.slot = None


class SpliceRelay(Channel):
    """One direction of a relayed connection: ``src`` socket -> pipe -> ``dst`` socket."""

    __slots__ = ("_pool", "_src", "_dst", "pipe")

    def __init__(self, engine: SpliceEngine, src, dst) -> None:
        super().__init__(engine.stats, engine.pipe_pool.size)
        self._pool = engine.pipe_pool
        self._src = src.fileno()
        self._dst = dst.fileno()
        self.pipe: Pipe | None = None

    def _take(self) -> None:
        if self.pipe is None:
            try:
                self.pipe = self._pool.acquire()
            except OSError as exc:
                raise NoPipe(exc) from None
            self.size = self.pipe.size      # smaller when the pipe budget is spent

    def _read(self, want: int) -> int:
        return os.splice(self._src, self.pipe.w, min(want, self.pipe.size), flags=_NONBLOCK)

    def _write(self, more: bool) -> int:
        return os.splice(self.pipe.r, self._dst, self.pending, flags=_NONBLOCK_MORE if more else _NONBLOCK)

    def close(self) -> None:
        pipe = self.pipe
        if pipe is not None:
            self.pipe = None
            pipe.pending = self.pending
            self._pool.release(pipe)
