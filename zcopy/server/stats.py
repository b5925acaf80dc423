"""Per-worker counters: plain ints bumped on the hot path, read as snapshots.

Engine byte and syscall counts live in each engine's ``EngineStats``; this
holds everything else a worker knows. ``snapshot()`` is the only reader.
"""

from __future__ import annotations

import time
from collections import Counter


class WorkerStats:
    __slots__ = ("started", "requests", "by_class", "by_method", "accepted", "closed", "errors",
                 "body_buffered")

    def __init__(self) -> None:
        self.started = time.time()
        self.requests = 0
        self.by_class = [0, 0, 0, 0, 0, 0]    # index = status // 100
        self.by_method: Counter = Counter()
        self.accepted = 0
        self.closed = 0
        self.errors: Counter = Counter()
        self.body_buffered = 0               # upload bytes that arrived with the head (copied)

    def reply(self, method: str | None, status: int) -> None:
        self.requests += 1
        self.by_class[status // 100] += 1
        if method is not None:
            self.by_method[method] += 1

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def snapshot(self, engines: dict) -> dict:
        return {
            "started": self.started,
            "requests": self.requests,
            "status": {f"{i}xx": n for i, n in enumerate(self.by_class) if i},
            "methods": dict(self.by_method),
            "connections": {"accepted": self.accepted, "closed": self.closed,
                            "active": self.accepted - self.closed},
            "errors": dict(self.errors),
            "body_buffered": self.body_buffered,
            "engines": {name: e.stats.snapshot() for name, e in engines.items()},
        }
