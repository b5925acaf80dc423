"""Up to which body size does one copying send beat a head send plus sendfile?

A server answers a small file in one of two ways:

- **copy**: head and body leave in one ``send`` from a buffer held in memory
  (the body copied once into the kernel, one syscall);
- **sendfile**: ``send(head, MSG_MORE)`` then ``sendfile`` of the body (no
  user-space copy, two syscalls).

The copy costs grow with the body; the extra syscall does not. Where the two
lines cross is a fact of this machine (CPU, kernel, interpreter), so it is
measured, not assumed: on a loopback TCP pair, for each body size, both ways
are timed call by call (the sender's calls only), rounds interleave the two
ways and rotate their order, and the medians are compared. The body comes
from a temp file whose pages are in the page cache, as a served hot file's are.

The receiver is a child process on another CPU (when this process may use two),
asking for each reply with one byte and reading it whole, as a server's clients
do. Where it runs changes the answer: a copied body leaves in pages the sender
allocates and the receiver frees, and freed on the sender's own CPU (a receiver
in the same thread) they come straight back to its per-CPU free lists, which
makes the copy look cheaper than it is for a server whose clients run elsewhere
(measured here: 64 KiB copy/sendfile 0.9x with the receiver on the sender's
CPU, about 2x with it on the other).

Finding ``small_reply.crossover``: value ``{"sizes": {"<body bytes>":
{"copy_us": median, "sendfile_us": median}}, "small_reply_max": bytes,
"largest_measured": bytes, "held_back": [bytes...], "iterations": n}``, where
``small_reply_max`` is the largest measured body size at which, and at every
smaller size, the copy was faster by more than 5% (0: it never was), and ``held_back`` lists the
sizes not measured because the loopback window could not take a whole reply at
once. ``--quick`` measures with fewer iterations.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import select
import socket
import statistics
import time
from typing import Iterator

from probes.finding import Finding, Status
from probes.receiver import Child, ChildGone, wait_for
from probes.resources import Resources, uninterrupted
from zcopy.units import format_size

#: Body sizes measured (bytes). A size counts only if every timed reply left at once: a
#: reply the receive window held back in part (net.core.rmem_max caps BUFFER) is not
#: measured, and neither is any larger size.
SIZES = (256, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144)
BUFFER = 1 << 20                # SO_SNDBUF / SO_RCVBUF asked for (the kernel caps and doubles)
SIOCOUTQNSD = 0x894B            # linux/sockios.h: bytes in the send queue not yet sent
#: A reply head of the usual length (zcopy's 200 head for a file is ~200 bytes).
HEAD = (b"HTTP/1.1 200 OK\r\nDate: Wed, 02 Dec 2026 06:00:00 GMT\r\nServer: zcopy\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Length: 65536\r\n"
        b"Last-Modified: Wed, 02 Dec 2026 05:00:00 GMT\r\nETag: \"1f-10000\"\r\nAccept-Ranges: bytes\r\n\r\n")
ROUNDS = 5
#: Replies the sender may have ahead of the receiver (each then still in its socket): a busy
#: machine does not have to run both processes at once for every reply.
AHEAD = 4
ITERATIONS = 400                # per size and way, over all rounds
QUICK_ITERATIONS = 100             # (the receiver on another CPU makes each reply a round trip)
#: The copy must be this much faster to count as a win: a per-file buffer costs memory,
#: and near the crossover the two ways differ by less than the rounds' noise.
MARGIN = 0.05


def probe(ctx) -> Iterator[Finding]:
    yield measure(QUICK_ITERATIONS if ctx.quick else ITERATIONS)


def crossover(medians: dict[int, tuple[float, float]]) -> int:
    """The largest size at which, and at every smaller size, copy (first) beat sendfile (second)
    by more than MARGIN; 0 if none."""
    best = 0
    for size in sorted(medians):
        copy, sendfile = medians[size]
        if copy > sendfile * (1 - MARGIN):
            break
        best = size
    return best


def measure(iterations: int) -> Finding:
    fid = "small_reply.crossover"
    samples: dict[tuple[int, str], list[int]] = {(size, way): [] for size in SIZES for way in ("copy", "sendfile")}
    per_round = max(1, iterations // ROUNDS)
    with Resources() as res:
        src, _ = res.tmpfile(max(SIZES), fill=b"zcopy-small-reply:")
        os.pread(src, max(SIZES), 0)                       # its pages are cached: a hot file
        client, server = _pair(res)
        buffers = {size: HEAD + os.pread(src, size, 0) for size in SIZES}   # the per-file copy in memory
        sizes = list(SIZES)
        try:
            receiver = _Receiver(res, server, client, buffers)
            _rounds(client, src, receiver, buffers, sizes, per_round, samples)
        except (Garbled, ChildGone) as exc:
            return Finding(fid, Status.ERROR, None, str(exc))
        where = receiver.where
    if not sizes:
        return Finding(fid, Status.ERROR, None, "not even the smallest reply left at once: the loopback socket "
                       "buffers are too small to measure")
    medians = {size: (statistics.median(samples[size, "copy"]) / 1000, statistics.median(samples[size, "sendfile"]) / 1000)
               for size in sizes}
    limit = crossover(medians)
    value = {"sizes": {str(size): {"copy_us": round(c, 3), "sendfile_us": round(s, 3)}
                       for size, (c, s) in medians.items()},
             "small_reply_max": limit, "largest_measured": max(sizes), "held_back": [s for s in SIZES if s not in sizes],
             "iterations": per_round * ROUNDS, "receiver": where}
    steps = ", ".join(f"{format_size(size)} {c:.1f}/{s:.1f}" for size, (c, s) in medians.items())
    if limit == 0:
        verdict = "the copy never won: every reply should use head + sendfile"
    elif limit == max(sizes):
        verdict = f"the copy won at every size measured, up to {format_size(limit)}"
    else:
        verdict = f"the copy won up to {format_size(limit)} bodies"
    return Finding(fid, Status.OK, value,
                   f"one send of head + body from memory against send(head, MSG_MORE) + sendfile, loopback TCP, "
                   f"the receiver {'on another CPU' if where == 'other_cpu' else 'on the same CPU (only one allowed)'}, "
                   f"median µs per reply (copy/sendfile, {per_round * ROUNDS} replies each): {steps}; {verdict}"
                   + (f"; {format_size(min(SIZES[len(sizes):]))} and up not measured (the loopback receive window "
                      "held part of a reply back)" if len(sizes) < len(SIZES) else ""))


def _rounds(client, src, receiver, buffers, sizes: list[int], per_round: int, samples) -> None:
    """ROUNDS rounds over ``sizes``, the two ways' order alternating; a size the window cannot take
    whole is dropped from ``sizes`` with every larger one."""
    for r in range(ROUNDS):
        for i, size in enumerate(list(sizes)):
            ways = ("copy", "sendfile") if (r + i) % 2 == 0 else ("sendfile", "copy")
            try:
                for way in ways:
                    _run(way, client, src, size, buffers[size], receiver, per_round, samples[size, way])
            except WindowFull:
                del sizes[i:]
                break


def _pair(res: Resources) -> tuple[socket.socket, socket.socket]:
    """A loopback pair with buffers asked big enough for the largest reply; the sender is
    non-blocking (as a server's sockets are), so a reply that does not fit returns short
    instead of waiting inside the timed calls."""
    with uninterrupted(), socket.socket(socket.AF_INET, socket.SOCK_STREAM) as lst:
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, BUFFER)     # inherited by the accepted socket
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        client = res.sock(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        client.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)
        client.connect(lst.getsockname())
        server, _ = lst.accept()
        res.sock(server)
    client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)      # as a server's sockets are
    server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)      # (its one-byte requests leave at once)
    client.setblocking(False)
    return client, server


class _Receiver:
    """The client side, in a child process (on another CPU when the machine has one): told
    (size, count) through a pipe, it reads ``count`` replies of that size, counting each whole one
    in shared memory (``done``), then answers whether the last one held the bytes sent. On its own
    CPU it reads without sleeping (non-blocking, in a loop), so the sender's calls never pay for
    waking it; the sender keeps at most ``AHEAD`` replies ahead of ``done``."""

    def __init__(self, res: Resources, sock: socket.socket, other: socket.socket, buffers: dict[int, bytes]) -> None:
        self._shared = mmap.mmap(-1, 8)                 # shared with the child: replies read whole
        res.callback(self._shared.close)
        self.done = memoryview(self._shared).cast("Q")
        res.callback(self.done.release)
        self.expected = 0
        self._deadline = 0.0
        child = Child(res, lambda ask, answer, moved: _receive(sock, ask, answer, buffers, self.done, moved),
                      close=(other,), handed=(sock,))
        self._ask, self._answer, self.where = child.ask, child.answer, child.where
        self._yield = self.where != "other_cpu"         # sharing this CPU, it must be let run

    def ask(self, size: int, count: int) -> None:
        self._deadline = time.monotonic() + 10
        os.write(self._ask, size.to_bytes(8, "little") + count.to_bytes(8, "little"))

    def wait(self, ahead: int) -> None:
        """Until the receiver has read all but ``ahead`` of the replies sent (the one just sent
        counted): a few may wait in its socket, so the sender does not stop for every reply when
        the receiver's CPU is busy with other work."""
        self.expected += 1
        done, until, spins = self.done, self.expected - ahead, 0
        while done[0] < until:
            if self._yield:             # it shares this CPU: let it run
                os.sched_yield()
            spins += 1
            if spins % 100000 == 0 and time.monotonic() > self._deadline:
                raise Garbled("the receiver stopped reading")

    def result(self) -> bool:
        """Whether the batch's last reply arrived byte for byte."""
        if not wait_for(self._answer, select.POLLIN):
            raise Garbled("the receiver stopped answering")
        return os.read(self._answer, 1) == b"1"


def _receive(sock: socket.socket, ask: int, answer: int, buffers: dict[int, bytes], done, spin: bool) -> int:
    """The child's loop (see ``_Receiver``); 0 when told to stop (its pipe closed)."""
    sink = bytearray(len(HEAD) + max(buffers))
    view = memoryview(sink)
    if spin:
        sock.setblocking(False)
    else:
        sock.settimeout(10)
    recv_into = sock.recv_into
    while True:
        order = os.read(ask, 16)
        if len(order) < 16:
            return 0
        size, count = int.from_bytes(order[:8], "little"), int.from_bytes(order[8:], "little")
        total = len(buffers[size])
        deadline = time.monotonic() + 10
        for _ in range(count):
            got = 0
            while got < total:
                try:
                    n = recv_into(view[got:], total - got)
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        return 1
                    continue
                if not n:
                    return 1
                got += n
            done[0] += 1
        os.write(answer, b"1" if view[:total] == buffers[size] else b"0")




def _run(way: str, sock: socket.socket, src: int, size: int, buffer: bytes, receiver: _Receiver,
         count: int, out: list[int]) -> None:
    """``count`` replies the ``way`` asked, each timed alone and read by the receiver (untimed)
    before the next; a reply the socket did not take whole is finished untimed (the batch
    completes) and the size is then reported as not measurable (``WindowFull``)."""
    clock, send, sendfile, fd = time.perf_counter_ns, sock.send, os.sendfile, sock.fileno()
    head, more, total = HEAD, socket.MSG_MORE, len(buffer)
    held = False
    ahead = max(0, min(AHEAD, BUFFER // 4 // total))    # replies left unread while the next is sent
    receiver.ask(size, count)
    for _ in range(count):
        if way == "copy":
            t0 = clock()
            n = send(buffer)
            t1 = clock()
        else:
            t0 = clock()
            n = send(head, more)
            if n == len(head):
                n += sendfile(fd, src, 0, size)
            t1 = clock()
        if n < total or _unsent(fd):
            held = True
        else:
            out.append(t1 - t0)
        while n < total:                        # what the socket did not take, untimed
            try:
                n += send(buffer[n:])
            except BlockingIOError:
                if not wait_for(fd, select.POLLOUT):
                    raise Garbled("the receiver stopped reading") from None
        receiver.wait(ahead)
    if not receiver.result():
        raise Garbled(f"{way}: a {size}-byte reply arrived with other bytes than were sent")
    if held:
        raise WindowFull(size)


class Garbled(Exception):
    """What arrived is not what was sent (or the receiver stopped)."""


class WindowFull(Exception):
    """Part of a timed reply was still unsent when the calls returned: the size is not measurable here."""


def _unsent(fd: int) -> int:
    return int.from_bytes(fcntl.ioctl(fd, SIOCOUTQNSD, bytes(4)), "little", signed=True)
