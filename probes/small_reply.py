"""Up to which body size does one copying send beat a head send plus sendfile?

A server answers a small file in one of two ways:

- **copy**: head and body leave in one ``send`` from a buffer held in memory
  (the body copied once into the kernel, one syscall);
- **sendfile**: ``send(head, MSG_MORE)`` then ``sendfile`` of the body (no
  user-space copy, two syscalls).

The copy costs grow with the body; the extra syscall does not. Where the two
lines cross is a fact of this machine (CPU, kernel, interpreter), so it is
measured, not assumed: on a loopback TCP pair, for each body size, both ways
are timed call by call (the sender's calls only; the receiver drains between
replies, untimed), rounds interleave the two ways and rotate their order,
and the medians are compared. The body comes from a temp file whose pages
are in the page cache, as a served hot file's are.

Finding ``small_reply.crossover``: value ``{"sizes": {"<body bytes>":
{"copy_us": median, "sendfile_us": median}}, "small_reply_max": bytes,
"largest_measured": bytes, "held_back": [bytes...], "iterations": n}``, where
``small_reply_max`` is the largest measured body size at which, and at every
smaller size, the copy was faster by more than 5% (0: it never was), and ``held_back`` lists the
sizes not measured because the loopback window could not take a whole reply at
once. ``--quick`` measures with fewer iterations.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import statistics
import time
from typing import Iterator

from probes.finding import Finding, Status
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
ITERATIONS = 400                # per size and way, over all rounds
QUICK_ITERATIONS = 200
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
        sink = bytearray(len(HEAD) + max(SIZES))
        buffers = {size: HEAD + os.pread(src, size, 0) for size in SIZES}   # the per-file copy in memory
        sizes = list(SIZES)
        try:
            _rounds(client, src, server, sink, buffers, sizes, per_round, samples)
        except Garbled as exc:
            return Finding(fid, Status.ERROR, None, str(exc))
    if not sizes:
        return Finding(fid, Status.ERROR, None, "not even the smallest reply left at once: the loopback socket "
                       "buffers are too small to measure")
    medians = {size: (statistics.median(samples[size, "copy"]) / 1000, statistics.median(samples[size, "sendfile"]) / 1000)
               for size in sizes}
    limit = crossover(medians)
    value = {"sizes": {str(size): {"copy_us": round(c, 3), "sendfile_us": round(s, 3)}
                       for size, (c, s) in medians.items()},
             "small_reply_max": limit, "largest_measured": max(sizes), "held_back": [s for s in SIZES if s not in sizes],
             "iterations": per_round * ROUNDS}
    steps = ", ".join(f"{format_size(size)} {c:.1f}/{s:.1f}" for size, (c, s) in medians.items())
    if limit == 0:
        verdict = "the copy never won: every reply should use head + sendfile"
    elif limit == max(sizes):
        verdict = f"the copy won at every size measured, up to {format_size(limit)}"
    else:
        verdict = f"the copy won up to {format_size(limit)} bodies"
    return Finding(fid, Status.OK, value,
                   f"one send of head + body from memory against send(head, MSG_MORE) + sendfile, loopback TCP, "
                   f"median µs per reply (copy/sendfile, {per_round * ROUNDS} replies each): {steps}; {verdict}"
                   + (f"; {format_size(min(SIZES[len(sizes):]))} and up not measured (the loopback receive window "
                      "held part of a reply back)" if len(sizes) < len(SIZES) else ""))


def _rounds(client, src, server, sink, buffers, sizes: list[int], per_round: int, samples) -> None:
    """ROUNDS rounds over ``sizes``, the two ways' order alternating; a size the window cannot take
    whole is dropped from ``sizes`` with every larger one."""
    for r in range(ROUNDS):
        for i, size in enumerate(list(sizes)):
            ways = ("copy", "sendfile") if (r + i) % 2 == 0 else ("sendfile", "copy")
            try:
                for way in ways:
                    _run(way, client, src, size, buffers[size], server, sink, per_round, samples[size, way])
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
    client.setblocking(False)
    server.settimeout(5)
    return client, server


def _run(way: str, sock: socket.socket, src: int, size: int, buffer: bytes, receiver: socket.socket,
         sink: bytearray, count: int, out: list[int]) -> None:
    """``count`` replies the ``way`` asked, each timed alone and drained (untimed) before the next."""
    clock, send, sendfile, fd = time.perf_counter_ns, sock.send, os.sendfile, sock.fileno()
    head, more, total, view = HEAD, socket.MSG_MORE, len(buffer), memoryview(sink)
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
        held = n < total or _unsent(fd)
        got = 0
        while got < total:              # what the socket did not take is sent here, untimed
            if n < total:
                with contextlib.suppress(BlockingIOError):
                    n += send(buffer[n:])
            got += receiver.recv_into(view[got:], total - got)
        if held:
            raise WindowFull(size)
        out.append(t1 - t0)
    if view[:total] != buffer:                   # the last reply, byte for byte
        raise Garbled(f"{way}: a {size}-byte reply arrived with other bytes than were sent")


class Garbled(Exception):
    """What arrived is not what was sent."""


class WindowFull(Exception):
    """Part of a timed reply was still unsent when the calls returned: the size is not measurable here."""


def _unsent(fd: int) -> int:
    return int.from_bytes(fcntl.ioctl(fd, SIOCOUTQNSD, bytes(4)), "little", signed=True)
