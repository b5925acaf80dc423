"""Does a short unsent queue (TCP_NOTSENT_LOWAT) make large sendfile transfers faster here?

``TCP_NOTSENT_LOWAT`` (tcp(7)) caps the bytes a socket holds that TCP has not sent yet: past
it, ``sendfile`` returns short and ``epoll`` reports the socket writable only when the unsent
bytes fall below half of it. The bytes in flight (sent, not yet acknowledged) are not capped,
so on a path with a large bandwidth-delay product the window still fills; what changes is how
much waits in the queue behind it, and how often the server is woken to top it up.

How that changes the rate is a fact of the kernel and its congestion control, so it is
measured, not assumed. On this kernel's loopback with BBR, a sender whose queue is always
full runs in a mode where BBR paces every segment with a high-resolution timer (about 8,000
timer interrupts a GB, each with its softirq on the sender's CPU), and that work caps the
delivery rate BBR then measures: about 3.5 GB/s. With a short queue, each refill leaves at
once from the ``sendfile`` call, BBR measures a far higher delivery rate, and the timers
almost vanish: 15-18 GB/s (docs/benchmarks.md, "A short unsent queue"). Another kernel, or
another congestion control, may show no difference; then the kernel's default is kept.

The measurement is a download as the server does it: a new loopback TCP connection per transfer
(it starts from the congestion control's initial state), a request, then a head sent with
MSG_MORE and the body with ``sendfile`` steps of the server's size from a cached temp file
(wrapping around it), non-blocking and corked with TCP_NODELAY set, waiting in ``poll`` for room,
as the server's loop does. The receiver is a child process on another CPU (when this process may
use two) that reads the head with 16 KiB reads and drops the body with ``recv(MSG_TRUNC)``. How
the two sides start matters to which mode BBR falls into: a sender that starts before any request
and without cork measured no difference here, so the probe does what the server does. Each candidate
(no limit, and every size in CANDIDATES) gets one transfer per round, rounds rotate the order,
and the medians are compared.

Finding ``notsent_lowat.rates``: value ``{"rates": {"<bytes, 0: no limit>": median GB/s},
"notsent_lowat": bytes (0: keep the kernel's default), "transfer": bytes, "rounds": n,
"sysctl": net.ipv4.tcp_notsent_lowat, "receiver": "other_cpu" | "same_cpu"}``.
``notsent_lowat`` is the largest candidate whose median is within MARGIN of the best one's,
when the best beat no limit by more than MARGIN (a larger limit wakes the server less often).
"""

from __future__ import annotations

import os
import select
import socket
import statistics
import time
from typing import Iterator

from probes.finding import Finding, Status
from probes.kernel import read_text
from probes.receiver import Child, ChildGone, wait_for
from probes.resources import Resources, uninterrupted
from zcopy.profile import SENDFILE_STEP
from zcopy.units import format_size

KiB, MiB = 1024, 1024 * 1024
#: Limits measured against no limit: from about a loopback segment's size to where the
#: queue is long enough that the server is woken about as often as without one.
CANDIDATES = (128 * KiB, 256 * KiB, MiB)
SOURCE = 16 * MiB               # the cached temp file each transfer sends over and over
TRANSFER, QUICK_TRANSFER = 256 * MiB, 128 * MiB
ROUNDS, QUICK_ROUNDS = 7, 5     # the rate of one transfer is bimodal: the median needs a few
#: A limit must beat no limit by this much to be chosen, and a larger one may trail the best
#: by this much: the wakeups it saves are worth more than a difference inside the noise.
MARGIN = 0.10
REQUEST = b"GET /probe HTTP/1.1\r\nHost: probe\r\n\r\n"
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n"
TIMEOUT = 10.0                  # seconds a transfer may take before the probe gives up


def probe(ctx) -> Iterator[Finding]:
    yield measure(QUICK_TRANSFER if ctx.quick else TRANSFER, QUICK_ROUNDS if ctx.quick else ROUNDS)


def choose(rates: dict[int, float]) -> int:
    """The limit to run with, from median GB/s by limit (0: no limit): the largest limit within
    MARGIN of the best one, if the best beat no limit by more than MARGIN; else 0."""
    limits = {size: rate for size, rate in rates.items() if size}
    if not limits or 0 not in rates:
        return 0
    best = max(limits.values())
    if best <= rates[0] * (1 + MARGIN):
        return 0
    return max(size for size, rate in limits.items() if rate >= best * (1 - MARGIN))


def measure(transfer: int, rounds: int) -> Finding:
    fid = "notsent_lowat.rates"
    if not hasattr(socket, "TCP_NOTSENT_LOWAT"):
        return Finding(fid, Status.UNSUPPORTED, None, "this Python has no socket.TCP_NOTSENT_LOWAT")
    sysctl = read_text("/proc/sys/net/ipv4/tcp_notsent_lowat")
    order = [0, *CANDIDATES]
    samples: dict[int, list[float]] = {size: [] for size in order}
    with Resources() as res:
        src, _ = res.tmpfile(SOURCE, fill=b"zcopy-notsent-lowat:")
        os.pread(src, SOURCE, 0)                            # its pages are cached: a hot file
        with uninterrupted():
            listener = res.sock(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            listener.bind(("127.0.0.1", 0))
            listener.listen(1)
        receiver = _Receiver(res, listener.getsockname()[1])
        try:
            for r in range(rounds):
                k = r % len(order)
                for size in order[k:] + order[:k]:
                    samples[size].append(transfer / _transfer(listener, src, size, transfer, receiver) / 1e9)
        except (Broken, ChildGone) as exc:
            return Finding(fid, Status.ERROR, None, str(exc))
        where = receiver.where
    rates = {size: statistics.median(xs) for size, xs in samples.items()}
    chosen = choose(rates)
    value = {"rates": {str(size): round(rate, 3) for size, rate in rates.items()}, "notsent_lowat": chosen,
             "transfer": transfer, "rounds": rounds, "sysctl": sysctl, "receiver": where}
    steps = ", ".join(f"{format_size(size) if size else 'no limit'} {rate:.2f}" for size, rate in rates.items())
    verdict = (f"{format_size(chosen)} is the largest limit within {MARGIN:.0%} of the best, which beat no limit "
               f"by more than {MARGIN:.0%}" if chosen else
               f"no limit beat the kernel's default by more than {MARGIN:.0%}: keep it")
    return Finding(fid, Status.OK, value,
                   f"sendfile of {format_size(transfer)} over a new loopback connection, the receiver "
                   f"{'on another CPU' if where == 'other_cpu' else 'on the same CPU (only one allowed)'}, "
                   f"median GB/s of {rounds} by TCP_NOTSENT_LOWAT: {steps}; {verdict}")


def _transfer(listener: socket.socket, src: int, lowat: int, total: int, receiver: "_Receiver") -> float:
    """Seconds to send ``total`` bytes over a new connection with ``lowat`` (0: not set), from the
    first send until the receiver has them all."""
    receiver.ask(total)
    if not wait_for(listener.fileno(), select.POLLIN):
        raise Broken("the receiver did not connect")
    with uninterrupted():
        conn, _ = listener.accept()
    with conn:
        if lowat:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, lowat)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)     # as the server's sockets are,
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)        # and corked while a body goes
        conn.settimeout(TIMEOUT)
        if not conn.recv(len(REQUEST)):
            raise Broken("the receiver sent no request")
        conn.setblocking(False)
        conn.send(HEAD, socket.MSG_MORE)
        fd, sendfile, step, sent = conn.fileno(), os.sendfile, SENDFILE_STEP, 0
        wait = select.poll()
        wait.register(fd, select.POLLOUT)
        t0 = time.perf_counter()
        while sent < total:
            at = sent % SOURCE
            try:
                sent += sendfile(fd, src, at, min(step, SOURCE - at, total - sent))
            except BlockingIOError:
                if not wait.poll(TIMEOUT * 1000):
                    raise Broken("the receiver stopped reading") from None
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)
        receiver.done()
        return time.perf_counter() - t0


class _Receiver:
    """A child process (on another CPU when the machine has one, ``probes.receiver``) that, told a
    byte count, connects to ``port``, sends a request, reads the head and drops that many body bytes
    with recv(MSG_TRUNC), and answers b"1" (b"0" if the connection ended short)."""

    def __init__(self, res: Resources, port: int) -> None:
        child = Child(res, lambda ask, answer, moved: _receive(port, ask, answer))
        self._ask, self._answer, self.where = child.ask, child.answer, child.where

    def ask(self, total: int) -> None:
        os.write(self._ask, total.to_bytes(8, "little"))

    def done(self) -> None:
        if not wait_for(self._answer, select.POLLIN):
            raise Broken("the receiver stopped answering")
        if os.read(self._answer, 1) != b"1":
            raise Broken("the receiver's connection ended before every byte came")


def _receive(port: int, ask: int, answer: int) -> int:
    """The child's loop (see ``_Receiver``); 0 when told to stop (its pipe closed)."""
    sink = bytearray(16 * MiB)
    while True:
        order = os.read(ask, 8)
        if len(order) < 8:
            return 0
        left = int.from_bytes(order, "little")
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
            s.sendall(REQUEST)
            head = b""
            while b"\r\n\r\n" not in head:
                got = s.recv(16 * KiB)
                if not got:
                    break
                head += got
            left -= len(head) - head.find(b"\r\n\r\n") - 4     # body bytes that came with the head
            recv_into, trunc = s.recv_into, socket.MSG_TRUNC
            while left:
                n = recv_into(sink, min(left, len(sink)), trunc)
                if not n:
                    break
                left -= n
        os.write(answer, b"0" if left else b"1")


class Broken(Exception):
    """The receiver stopped, or a transfer did not arrive whole."""
