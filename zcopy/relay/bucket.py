"""Token buckets: rate limits that park a direction instead of spinning.

A bucket fills at ``rate`` bytes/s up to ``burst``. A pump asks ``grant``
how much it may read now; when the answer is too small to be worth a
syscall, the pump parks and the worker wakes it at ``ready_at`` with a timer
in the epoll timeout. Nothing polls: a parked direction costs nothing until
its tokens are there.

Bytes are charged when they are read from the source (they then leave at
the speed of the destination), so over any window of T seconds at most
``burst + rate * T`` bytes enter the relay. The burst is small (50 ms worth,
at least one quantum) so a measured rate stays close to the limit.

Fairness: a bucket serves the directions waiting for it in the order they
began to wait (its ``line``). Without that, the direction whose timer fired
first took every refill, and a new connection behind a bulk transfer at the
full rate got its first byte only when the transfer ended. A direction that
finds others waiting joins the back of the line even if tokens are there,
and sets no timer: only the first in line waits for the refill; when it takes
its grant and leaves, the bucket wakes the next one (``waiter.wake(when)``)
for the moment the next quantum is there. With N directions waiting, each
gets a turn every N refill intervals (the time one quantum takes to refill),
and a newcomer's first turn comes after the ones already waiting.
"""

from __future__ import annotations

import math
from collections import OrderedDict

#: Do not wake up for fewer bytes than this (unless the burst is smaller).
QUANTUM = 16 * 1024
#: Seconds of traffic the bucket may hold.
BURST_SECONDS = 0.05
#: The shortest wait a short waiter is given (a timer "now" would fire again at once).
MIN_WAIT = 1e-4


class TokenBucket:
    __slots__ = ("rate", "burst", "quantum", "tokens", "stamp", "line")

    def __init__(self, rate: float, now: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.rate = float(rate)
        self.burst = max(rate * BURST_SECONDS, min(rate, QUANTUM))
        self.quantum = min(self.burst, QUANTUM)
        self.tokens = self.burst
        self.stamp = now
        #: Directions waiting for tokens, first come first (an ordered set:
        #: O(1) to join, to leave from anywhere and to find the first).
        self.line: OrderedDict = OrderedDict()

    def available(self, now: float) -> float:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        return self.tokens

    def first(self, waiter) -> bool:
        """True when nobody else waits ahead of ``waiter``."""
        return not self.line or next(iter(self.line)) is waiter

    def wait(self, waiter) -> None:
        """Join the back of the line (a waiter already in it keeps its place)."""
        self.line[waiter] = None

    def leave(self, waiter, now: float, taken: float = 0.0) -> None:
        """``waiter`` is out of the line (granted ``taken`` bytes now, or gone).
        If it was first, wake the next for when its quantum will be there."""
        line = self.line
        if waiter not in line:
            return
        was_first = next(iter(line)) is waiter
        del line[waiter]
        if was_first and line:
            need = self.quantum - (self.available(now) - taken)
            next(iter(line)).wake(now + need / self.rate if need > 0 else now)

    def ready_at(self, now: float, want: float, waiter) -> float:
        """When ``min(want, quantum)`` tokens will be there for ``waiter``;
        ``inf`` when others are ahead of it (it will be woken in turn)."""
        if not self.first(waiter):
            return math.inf
        need = min(want, self.quantum) - self.available(now)
        # never "now" while short: the loop fires timers that are due at once
        return now + max(need / self.rate, MIN_WAIT) if need > 0 else now


class Limiter:
    """The buckets one connection answers to (the worker's share of
    ``--rate`` and the connection's own ``--conn-rate``), both directions
    together. A ``waiter`` is the direction asking (its pump): anything with
    ``wake(when)``."""

    __slots__ = ("buckets",)

    def __init__(self, buckets: list[TokenBucket]) -> None:
        self.buckets = buckets

    def grant(self, want: int, now: float, waiter) -> int:
        """Bytes that may be read now: up to ``want``, or 0 to park (the
        waiter is then in line on every bucket that made it wait)."""
        allowed = float(want)
        short = []
        for b in self.buckets:
            tokens = b.available(now)
            # (one byte of slack: a refill computed in floats may fall a hair short)
            if tokens + 1 < min(want, b.quantum) or not b.first(waiter):
                short.append(b)
            allowed = min(allowed, tokens)
        if short:
            for b in self.buckets:
                # In line where it must wait; out of the line of a bucket it
                # could take from, so that line never waits on another bucket.
                if b in short:
                    b.wait(waiter)
                else:
                    b.leave(waiter, now)
            return 0
        for b in self.buckets:
            b.leave(waiter, now, allowed)
        return int(allowed)

    def consume(self, n: int) -> None:
        for b in self.buckets:
            b.tokens -= n

    def ready_at(self, now: float, want: int, waiter) -> float:
        return max(b.ready_at(now, want, waiter) for b in self.buckets)

    def forget(self, waiter, now: float) -> None:
        """``waiter`` will not ask again (its connection closed): out of every line."""
        for b in self.buckets:
            b.leave(waiter, now)
