"""The rate of each transfer in flight, between two snapshots.

A worker's snapshot lists its transfers under way with their rate. The
rate is taken since the previous snapshot (about a second ago), or since
the transfer began when it is new, so one stall shows at once instead of
being averaged away. Shared by every server kind (serve, relay).
"""

from __future__ import annotations

from typing import Hashable, Iterable

#: Transfers listed per worker snapshot (the busiest by rate); all are counted.
INFLIGHT_MAX = 64


def busiest(transfers: list[dict], limit: int = INFLIGHT_MAX) -> list[dict]:
    """The ``limit`` fastest transfers, fastest first."""
    return sorted(transfers, key=lambda t: t["rate"], reverse=True)[:limit]


class TransferRates:
    """``measure()`` once per snapshot; it remembers only the transfers it saw last time."""

    def __init__(self) -> None:
        self._last: dict[Hashable, tuple[int, float]] = {}   # key -> (bytes done, when)

    def measure(self, transfers: Iterable[tuple[Hashable, int, float]], now: float) -> list[float]:
        """Bytes/s of each ``(key, done, started)``, in order. ``key`` names one
        transfer across snapshots (a reused fd must not continue an old one);
        ``started`` and ``now`` are on the same monotonic clock."""
        rates, seen = [], {}
        for key, done, started in transfers:
            prev = self._last.get(key)
            if prev is not None and prev[0] <= done and now > prev[1]:
                rates.append((done - prev[0]) / (now - prev[1]))
            else:
                rates.append(done / (now - started) if now > started else 0.0)
            seen[key] = (done, now)
        self._last = seen
        return rates
