"""The one small interface every transfer engine implements.

An engine moves ``count`` bytes between a file and a non-blocking socket
without knowing anything about HTTP. The event loop drives it::

    xfer = engine.start_send(file_fd, offset, count)
    while True:
        state = xfer.step(sock_fd)
        if state is Progress.DONE:      break            # all bytes left
        if state is Progress.BLOCKED:   wait for EPOLLOUT, then step again
        if state is Progress.MORE:      let other connections run, step again
    xfer.close()                                           # always, even on error

``step`` never blocks on the socket (it is non-blocking) and moves at most
``budget`` bytes per call so one fast client cannot starve the loop. It
raises ``FileShrank`` when the file ends before ``count`` bytes (the caller
must close the connection: never pad, never loop), and lets the socket's
``OSError`` (EPIPE, ECONNRESET) propagate. The receive direction is the mirror
image: ``start_recv(file_fd, offset, count).step(sock_fd)`` returns BLOCKED
when the socket has nothing to read yet and raises ``PeerClosed`` on an early
EOF.

An engine whose transfers keep nothing between calls (sendfile: the kernel
holds no bytes for us) also offers ``send_once(sock_fd, file_fd, offset,
count) -> int``: one syscall moving at most ``count`` bytes, returning how
many left (0: the socket is full; ``FileShrank`` as above). A range that
leaves in one call then needs no transfer object, which is most of what a
small file costs. Engines that hold state between calls (a pipe with bytes in
it, a mapping, a buffer) have ``send_once = None``.

Socket to socket (``zcopy relay``) is the same style with no file: one
``Channel`` per direction of a relayed connection, bound to its two
non-blocking sockets, where the bytes wait between reading and writing::

    chan = engine.start_relay(src_sock, dst_sock)     # splice: a pipe; copy: a buffer
    n = chan.fill(want)        # read at most ``want`` (<= chan.size) from src; 0: EOF
    while chan.pending:
        chan.flush(more)       # write what it holds to dst (may be partial)
    chan.close()               # always: the pipe or buffer goes back to its pool

``fill`` is only called on an empty channel (bytes already read always leave
first: nothing is reordered); EAGAIN (``BlockingIOError``) and the sockets'
errors propagate, and the caller knows which socket each call used. A channel
holds its pipe or buffer only while bytes are in it, so an idle connection
holds none. A pool that cannot make a pipe (EMFILE, ENFILE, ENOMEM: not the
peer's fault) raises ``NoPipe``.

Each engine owns an ``EngineStats`` with plain integer counters that the stats
layer snapshots; bumping them is the only bookkeeping on the hot path.
"""

from __future__ import annotations

import enum
import fcntl
import os
from dataclasses import dataclass
from typing import Callable, Protocol


class Progress(enum.Enum):
    DONE = "done"        # every byte moved
    BLOCKED = "blocked"  # the socket would block: wait for EPOLLOUT (send) / EPOLLIN (recv)
    MORE = "more"        # per-step budget used up; call step again after other work


class FileShrank(OSError):
    """The source file ended before the promised byte count (it was truncated
    or replaced during the transfer). The response length is now a lie: the
    connection must be closed."""


class PeerClosed(OSError):
    """The socket reached EOF before the promised byte count (upload cut off)."""


class NoPipe(Exception):
    """A relay channel's pool could not make a pipe (EMFILE, ENFILE, ENOMEM)."""

    def __init__(self, exc: OSError) -> None:
        super().__init__(str(exc))
        self.exc = exc


def check_positional(file_fd: int) -> None:
    """Refuse a file opened with O_APPEND for a receive: Linux's pwrite(2)
    then appends whatever the offset says (BUGS in the man page) and splice(2)
    fails with EINVAL, so bytes could not land at the offset asked for."""
    if fcntl.fcntl(file_fd, fcntl.F_GETFL) & os.O_APPEND:
        raise ValueError("the file is open with O_APPEND: writes would ignore the offset; open it without")


@dataclass
class EngineStats:
    """Counters for one engine in one process. Plain ints: cheap to bump."""

    bytes_sent: int = 0
    bytes_received: int = 0
    syscalls: int = 0

    def snapshot(self) -> dict[str, int]:
        return {"bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
                "syscalls": self.syscalls}


class Transfer(Protocol):
    """One in-progress copy of a byte range. Not thread-safe; one per connection."""

    offset: int       # next file offset to move
    remaining: int    # bytes still to move (for splice: includes bytes parked in the pipe)

    def step(self, sock_fd: int) -> Progress: ...

    def close(self) -> None:
        """Release pooled resources (pipe, buffer, mapping). Idempotent."""


class Engine(Protocol):
    name: str            # "sendfile", "splice", "mmap_send", "read_send", "recv_pwrite", ...
    stats: EngineStats
    zero_copy: bool      # True when file bytes never pass through user space
    send_once: "Callable[[int, int, int, int], int] | None"   # see the module docstring

    def start_send(self, file_fd: int, offset: int, count: int) -> Transfer: ...

    def close(self) -> None:
        """Release what the engine pools (idle pipes, buffers). Transfers first."""


class ReceiveEngine(Protocol):
    """An engine for uploads: socket -> file at an offset (``splice``, ``recv_pwrite``).

    ``start_recv(...).step(sock_fd)`` returns BLOCKED when the socket has
    nothing to read (wait for EPOLLIN) and raises ``PeerClosed`` on early EOF.
    An engine may implement both this and ``Engine``.
    """

    name: str
    stats: EngineStats
    zero_copy: bool

    def start_recv(self, file_fd: int, offset: int, count: int) -> Transfer: ...

    def close(self) -> None: ...


class Channel:
    """One direction of a socket-to-socket relay (see the module docstring).
    What both relay engines share: the counting and when the pipe or buffer
    goes back. An engine's channel says how it takes one (``_take``), reads
    into it (``_read``), writes from it (``_write``) and gives it back
    (``close``)."""

    __slots__ = ("_stats", "size", "pending")

    def __init__(self, stats: EngineStats, size: int) -> None:
        self._stats = stats
        self.size = size          # the most one ``fill`` may read
        self.pending = 0          # bytes read and not yet written

    def fill(self, want: int) -> int:
        self._take()
        self._stats.syscalls += 1
        try:
            n = self._read(want)
        except OSError:
            self.close()
            raise
        if n == 0:
            self.close()
        self.pending = n
        self._stats.bytes_received += n
        return n

    def flush(self, more: bool) -> int:
        """``more``: the sender had more queued (the last fill was full)."""
        self._stats.syscalls += 1
        n = self._write(more)
        self.pending -= n
        self._stats.bytes_sent += n
        if not self.pending:
            self.close()
        return n

    def _take(self) -> None:
        raise NotImplementedError

    def _read(self, want: int) -> int:
        raise NotImplementedError

    def _write(self, more: bool) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Give the pipe or buffer back (closed instead if bytes are still in it). Idempotent."""
        raise NotImplementedError


class RelayEngine(Protocol):
    """Socket -> socket (``splice`` through a pipe, ``copy`` through a buffer)."""

    name: str
    stats: EngineStats
    zero_copy: bool

    def start_relay(self, src, dst) -> Channel: ...

    def close(self) -> None: ...
