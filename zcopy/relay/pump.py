"""One direction of a relayed connection: source socket -> channel -> destination.

The channel is the relay engine's (``zcopy.engines``: ``splice`` through a
pooled pipe, ``copy`` through a buffer; see ``engines.base.Channel``); the
pump decides when it reads and writes. ``run`` loops over two moves until
it cannot go on: flush what the channel holds to the destination, then
(channel empty) fill it from the source. It stops and says why:

- ``BLOCKED``: a socket said EAGAIN; the ``readable``/``writable`` flag of
  that end is cleared and the next epoll edge sets it again.
- ``MORE``: this turn's byte budget is used; run again after the others.
- ``PARKED``: the rate limit has no tokens; run again at ``wake_at``
  (``inf``: others are in line first; the limiter calls ``wake`` in turn).
- ``DONE``: the source sent EOF and every byte was delivered; the
  destination's write side has been shut (half-close travels on, the other
  direction keeps flowing).

A socket error is raised as ``SideFailed`` naming the end it came from, so
the session can tell a client reset from an upstream one.
"""

from __future__ import annotations

import socket

BLOCKED, MORE, PARKED, DONE = "blocked", "more", "parked", "done"


class SideFailed(Exception):
    def __init__(self, end, exc: OSError) -> None:
        super().__init__(f"{end.name}: {exc}")
        self.end = end
        self.exc = exc


class Pump:
    __slots__ = ("src", "dst", "chan", "limiter", "clock", "budget",
                 "moved", "eof", "done", "more", "wake_at", "on_wake")

    def __init__(self, src, dst, engine, limiter, clock, budget: int, on_wake=None) -> None:
        self.src = src            # End: .sock, .readable, .name
        self.dst = dst            # End: .sock, .writable, .name
        self.chan = engine.start_relay(src.sock, dst.sock)
        self.limiter = limiter    # bucket.Limiter or None
        self.clock = clock        # the worker: .now is this loop turn's time
        self.budget = budget
        self.moved = 0            # bytes delivered to dst
        self.eof = False
        self.done = False
        self.more = False
        self.wake_at = 0.0
        self.on_wake = on_wake    # called with the time when the limiter's line says "your turn"

    def run(self) -> str:
        chan, src, dst = self.chan, self.src, self.dst
        budget = self.budget
        while True:
            if chan.pending:
                if not dst.writable:
                    return BLOCKED
                try:
                    n = chan.flush(self.more)
                except BlockingIOError:
                    dst.writable = False
                    return BLOCKED
                except OSError as exc:
                    raise SideFailed(dst, exc) from None
                self.moved += n
                continue
            if self.eof:
                self._finish()
                return DONE
            if budget <= 0:
                return MORE
            if not src.readable:
                return BLOCKED
            want = min(chan.size, budget)
            limiter = self.limiter
            if limiter is not None:
                now = self.clock.now
                granted = limiter.grant(want, now, self)
                if not granted:
                    self.wake_at = limiter.ready_at(now, want, self)
                    return PARKED
                want = granted
            try:
                n = chan.fill(want)
            except BlockingIOError:
                src.readable = False
                return BLOCKED
            except OSError as exc:
                raise SideFailed(src, exc) from None
            if n == 0:
                self.eof = True
                continue
            if limiter is not None:
                limiter.consume(n)
            self.more = n == chan.size
            budget -= n

    def wake(self, when: float) -> None:
        """The limiter's line: this direction's turn comes at ``when``."""
        self.wake_at = when
        self.on_wake(when)

    def _finish(self) -> None:
        """EOF delivered: pass the half-close on."""
        self.done = True
        try:
            self.dst.sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            raise SideFailed(self.dst, exc) from None
