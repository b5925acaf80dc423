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
"""

from __future__ import annotations

#: Do not wake up for fewer bytes than this (unless the burst is smaller).
QUANTUM = 16 * 1024
#: Seconds of traffic the bucket may hold.
BURST_SECONDS = 0.05


class TokenBucket:
    __slots__ = ("rate", "burst", "quantum", "tokens", "stamp")

    def __init__(self, rate: float, now: float) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be positive, not {rate}")
        self.rate = float(rate)
        self.burst = max(rate * BURST_SECONDS, min(rate, QUANTUM))
        self.quantum = min(self.burst, QUANTUM)
        self.tokens = self.burst
        self.stamp = now

    def available(self, now: float) -> float:
        if now > self.stamp:
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
        return self.tokens

    def ready_at(self, now: float, want: float) -> float:
        """When ``min(want, quantum)`` tokens will be there."""
        need = min(want, self.quantum) - self.available(now)
        return now + need / self.rate if need > 0 else now


class Limiter:
    """The buckets one connection answers to (the worker's share of
    ``--rate`` and the connection's own ``--conn-rate``), both directions
    together."""

    __slots__ = ("buckets", "quantum")

    def __init__(self, buckets: list[TokenBucket]) -> None:
        self.buckets = buckets
        self.quantum = min(b.quantum for b in buckets)

    def grant(self, want: int, now: float) -> int:
        """Bytes that may be read now: up to ``want``, or 0 to park."""
        allowed = float(want)
        for b in self.buckets:
            allowed = min(allowed, b.available(now))
        if allowed < min(want, self.quantum):
            return 0
        return int(allowed)

    def consume(self, n: int) -> None:
        for b in self.buckets:
            b.tokens -= n

    def ready_at(self, now: float, want: int) -> float:
        return max(b.ready_at(now, want) for b in self.buckets)
