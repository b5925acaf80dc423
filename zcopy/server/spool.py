"""A request body's way into its file: taken on the loop, written on a thread.

The loop thread never writes a body into its file: a write into the page cache
can block (dirty-page throttling, block allocation reading metadata, a network
or FUSE filesystem). So a ``FileSink``'s bytes go through a ``Spool``:

- on the loop, bytes are *taken* into slots: straight from the non-blocking
  socket through the upload engine's slot (``recv``: socket->pipe for splice,
  readv into a buffer for recv_pwrite), or copied in when they passed through
  the process anyway (``put``: what came with the head, a chunked body's
  decoded pieces, a TLS transport's plaintext);
- a pool thread of the worker's body writers (``Worker.body_writer``, an ``Executor`` of their
  own, so that writes stuck on a stalled disk hold no thread that listings or commits need) *writes* them out at their file
  offset (pipe->file by splice, or pwrite), one task at a time, in file order;
- its completion runs on the loop: the slots go back to their pools (which
  are the loop's), the sink hears of the bytes now in the file
  (``sink.advanced``: exact offsets, the resumable upload's checkpoints), and
  the connection is woken (``written``).

Double buffering: while a thread writes one batch of slots the loop fills
others, up to ``SLOTS`` slots held (one read of bytes more at most, for
``put``); a full spool is backpressure, and the connection stops reading its
socket until a write comes back. A slot goes to the thread when it is full or,
when the thread has nothing to do, at least half full (at the end of the
connection's turn, or when a write comes back: ``flush``), and whatever it
holds once the body has ended. Each write is a hop to a thread and back (an
eventfd, a wake-up, GIL hand-overs), so slots are 1 MiB and go as full as the
client allows.

Lifetime: ``close`` (the body will not complete: cut, refused, timed out, the
connection closed) drops what was not yet handed to a thread, and the sink's
``abort`` waits until the write in flight has come back: the fd it writes
into is closed (or its upload's offset recorded) only then. A write's error
(ENOSPC, EIO...) is kept in ``error``; the connection raises it in its next
turn, as if its own write had failed.
"""

from __future__ import annotations

from collections import deque

from zcopy.engines import PeerClosed

#: Slots a body may hold at once: the batch a thread writes and the ones being filled (4 measured
#: better than 2 and 1 in same-run A/Bs, docs/serve.md: a batch of several slots is one hop).
SLOTS = 4


def _write_out(fd: int, batch: list, offset: int) -> int:
    """(a pool thread) Each slot of ``batch`` into ``fd`` from ``offset`` on: the syscalls made."""
    calls = 0
    for slot in batch:
        n = slot.pending
        calls += slot.write_to(fd, offset)
        offset += n
    return calls


class Spool:
    __slots__ = ("sink", "fd", "executor", "socket_slot", "bytes_slot", "stats", "written", "filling", "queued",
                 "writing", "held", "at", "error", "closed", "ended")

    def __init__(self, sink, executor, socket_slot, bytes_slot, stats, written) -> None:
        self.sink = sink
        self.fd = sink.fd
        self.executor = executor
        self.socket_slot = socket_slot      # () -> a slot the upload engine fills from the socket
        self.bytes_slot = bytes_slot        # () -> a buffer slot for bytes the process holds
        self.stats = stats                  # the upload engine's counters (the write side's syscalls)
        self.written = written              # (loop) called after each write came back
        self.filling = None                 # the slot bytes go into now
        self.queued: deque = deque()        # full slots waiting for the thread, in file order
        self.writing: list | None = None    # the batch a thread is writing
        self.held = 0                       # slots held (filling + queued + writing)
        self.at = sink.offset               # file offset of the next byte handed to a thread
        self.error: OSError | None = None   # a write's error, raised by the connection
        self.closed = False
        self.ended = False                  # every byte of the body is taken: the last slot goes as it is

    @property
    def full(self) -> bool:
        """No room for more bytes: stop reading until a write comes back."""
        filling = self.filling
        return self.held >= SLOTS and (filling is None or filling.space == 0)

    @property
    def settled(self) -> bool:
        """Every byte taken is in the file (or an error ended it)."""
        filling = self.filling
        return self.writing is None and not self.queued and (filling is None or not filling.pending)

    # -- the loop takes bytes --------------------------------------------------

    def recv(self, sock_fd: int, want: int) -> int:
        """Take at most ``want`` body bytes from the socket: how many (0: the slot turned out full
        first, ask ``full`` again); ``BlockingIOError`` when it has none now, ``PeerClosed`` at its
        EOF. Only when not ``full``."""
        slot = self.filling
        if slot is None or slot.space == 0:
            slot = self._new(self.socket_slot)
        n = slot.fill(sock_fd, want)
        if slot.space == 0:
            self._queue()
        elif n == 0:
            raise PeerClosed("the peer closed during a request body")
        return n

    def put(self, data) -> None:
        """Take bytes the process holds (copied into buffer slots)."""
        view = memoryview(data)
        while view:
            slot = self.filling
            if slot is None or slot.space == 0 or not hasattr(slot, "put"):
                slot = self._new(self.bytes_slot)
            n = slot.put(view)
            view = view[n:]
            if slot.space == 0:
                self._queue()

    def flush(self, end: bool = False) -> None:
        """The end of a turn: if no write is under way, the slot being filled goes to a thread
        when it is at least half full, or whatever it holds once the body has ``end``ed (else the
        next turn fills it further: one write task a slot is the cost to keep low)."""
        if end:
            self.ended = True
        if self.writing is None and self.error is None:
            slot = self.filling
            if slot is not None and (self.ended or slot.pending >= slot.space):
                self._queue()
            self._submit()

    def _new(self, make):
        old = self.filling
        if old is not None:
            if old.pending:
                self._queue()           # (a buffer of put bytes before the socket's pipe: in order)
            else:
                self.filling = None
                old.release()
                self.held -= 1
        self.filling = slot = make()
        self.held += 1
        return slot

    def _queue(self) -> None:
        """The slot being filled, if it holds bytes, joins the queue; handed over when no write is under way."""
        slot = self.filling
        if slot is not None and slot.pending:
            self.filling = None
            self.queued.append(slot)
            if self.writing is None and self.error is None:
                self._submit()

    # -- a thread writes --------------------------------------------------------

    def _submit(self) -> None:
        queued = self.queued
        if not queued or self.writing is not None:
            return
        batch = list(queued)
        queued.clear()
        self.writing = batch
        at = self.at
        self.at = at + sum(slot.pending for slot in batch)
        self.executor.submit(_write_out, self.fd, batch, at).then(self._done)

    def _done(self, task) -> None:
        """(loop) A batch came back: its slots return, the sink hears of the bytes, the next batch goes."""
        batch, self.writing = self.writing, None
        for slot in batch:
            slot.release()              # (a pipe with bytes left in it, after an error, is closed)
        self.held -= len(batch)
        if task.error is not None:
            if self.error is None:
                self.error = task.error
            self._drop()
        else:
            self.stats.syscalls += task.result
            self.sink.advanced(self.at - self.sink.offset)      # (one batch at a time: all up to ``at``)
            if self.closed:
                self._drop()            # (closed meanwhile: nothing more goes in)
            else:
                self.flush()            # the thread is free: what waits goes now
        if self.closed:
            if self.writing is None:
                self.sink.abort()
            return
        self.written()

    def _drop(self) -> None:
        """(loop) Every slot not being written goes back, its bytes with it."""
        if self.filling is not None:
            self.queued.append(self.filling)
            self.filling = None
        while self.queued:
            self.queued.popleft().release()
            self.held -= 1

    # -- the end ------------------------------------------------------------------

    def finish(self) -> None:
        """(loop; ``settled``) The body is in the file: an empty slot left goes back."""
        self._drop()

    def close(self) -> None:
        """The body will not complete: drop what waits; the sink is aborted once no write is in flight."""
        if self.closed:
            return
        self.closed = True
        self._drop()
        if self.writing is None:
            self.sink.abort()
