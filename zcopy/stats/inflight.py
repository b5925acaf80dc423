"""The rate of each transfer in flight, as a worker's snapshot lists it.

Two things made a steady transfer's rate flip between 0 and double on
alternate snapshots (issue 15.15), and each is taken out here:

- **Bytes delivered, not bytes handed to the kernel.** A socket's send
  buffer (megabytes once autotuned) takes bytes in bursts: with edge-
  triggered epoll the worker writes when a third of it has drained, so a
  client reading 300 KB/s steadily showed 1 MB in one second and nothing in
  the next three. Callers pass ``done`` minus the bytes still in the socket's
  send queue (``unsent``: SIOCOUTQ, written but not yet acknowledged), which
  moves at the pace the peer reads.
- **A window over more than one publish period.** Snapshots are taken once
  a second with jitter; the rate is taken over at least ``RATE_WINDOW``
  seconds (since the transfer began when it is younger), so the phase of a
  burst within one period does not decide the figure. A stall shows within
  the window.

Shared by every server kind (serve, relay); ``zcopy top`` uses the same
window for its own rates.
"""

from __future__ import annotations

import fcntl
import struct
import termios
from collections import deque
from typing import Hashable, Iterable

#: Transfers listed per worker snapshot (the busiest by rate); all are counted.
INFLIGHT_MAX = 64
#: Seconds a rate is averaged over: two publish periods (one second each).
RATE_WINDOW = 2.0
_INT = struct.Struct("i")
_ZERO = bytes(_INT.size)


def busiest(transfers: list[dict], limit: int = INFLIGHT_MAX) -> list[dict]:
    """The ``limit`` fastest transfers, fastest first."""
    return sorted(transfers, key=lambda t: t["rate"], reverse=True)[:limit]


def unsent(sock_fd: int) -> int:
    """Bytes in a TCP socket's send queue, not yet acknowledged by the peer
    (SIOCOUTQ, which is TIOCOUTQ); 0 when the fd cannot say."""
    try:
        return _INT.unpack(fcntl.ioctl(sock_fd, termios.TIOCOUTQ, _ZERO))[0]
    except OSError:
        return 0


class TransferRates:
    """``measure()`` once per snapshot; it remembers the transfers it saw last
    time, each with its samples of the last ``window`` seconds."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self.window = window
        self._seen: dict[Hashable, deque[tuple[int, float]]] = {}   # key -> (bytes done, when), oldest first

    def measure(self, transfers: Iterable[tuple[Hashable, int, float]], now: float) -> list[float]:
        """Bytes/s of each ``(key, done, started)``, in order. ``key`` names one
        transfer across snapshots (a reused fd must not continue an old one);
        ``started`` and ``now`` are on the same monotonic clock."""
        rates, seen = [], {}
        for key, done, started in transfers:
            samples = self._seen.get(key)
            if samples is None or (samples and samples[-1][0] > done):
                samples = deque([(0, started)])          # new (or restarted): since it began
            # the reference: the newest sample at least a window old, else the oldest
            while len(samples) > 1 and now - samples[1][1] >= self.window:
                samples.popleft()
            then, at = samples[0]
            rates.append((done - then) / (now - at) if now > at else 0.0)
            samples.append((done, now))
            seen[key] = samples
        self._seen = seen
        return rates
