"""Per-worker counters: plain ints bumped on the hot path, read as snapshots.

Engine byte and syscall counts live in each engine's ``EngineStats``; this
holds everything else a worker knows. ``snapshot()`` is the only reader and
runs once a second (from the worker's tick), so anything costly (walking the
connections for the in-flight table, building dicts) happens there, never per
request.

Bytes that the connection itself moves through user space (response heads,
listings, error pages, request heads, upload bytes that arrived with the head)
are counted as the pseudo-engine ``copy``; together with the engines this
makes ``bytes_sent``/``bytes_received`` every byte that crossed the sockets.

Latencies are measured with the worker's per-batch clock ``worker.now``:
their resolution is one loop turn, which is also the granularity at which the
loop can act on a request at all. Most replies are complete in the turn that
read their request (both latencies exactly 0): they cost one int bump
(``instant``) and join the first bucket of both histograms in ``snapshot``;
the others are bucketed as they happen (one ``bisect`` on a tuple, one int
bump, one float add for the sum).
"""

from __future__ import annotations

import os
import time
from bisect import bisect_left
from collections import Counter

from zcopy.stats.inflight import TransferRates, busiest, unsent

#: Upper bounds (seconds) of the latency buckets; one more bucket for "above".
#: Log-spaced 1-2-5 so p50/p99 estimates stay within a factor 2.5.
LATENCY_BOUNDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
                  30.0, 60.0)
_FIRST_BOUND = LATENCY_BOUNDS[0]


class Histogram(list):
    """Bucket counts (a plain list, indexed by bucket) plus the sum of the
    observed seconds, which Prometheus wants beside the buckets (``_sum``)."""

    __slots__ = ("sum",)

    def __init__(self, buckets: int) -> None:
        super().__init__([0] * buckets)
        self.sum = 0.0


MAX_USERS = 256
OTHERS = "(others)"


class WorkerStats:
    __slots__ = ("started", "by_class", "by_method", "gets", "accepted", "closed", "errors",
                 "body_buffered", "copy_sent", "copy_received", "ttfb", "ttlb", "instant", "_rates", "by_user")

    def __init__(self) -> None:
        self.started = time.time()
        self.by_class = [0, 0, 0, 0, 0, 0]    # index = status // 100; their sum is the request count
        # A plain dict, not a Counter: Counter defines __delitem__ in Python, which turns every
        # ``c[k] = v`` into a Python-level slot call (~1,000 instructions a request, callgrind).
        self.by_method: dict[str, int] = {}
        self.gets = 0                        # GETs, apart from ``by_method`` (a C int compiled: no dict write)
        self.accepted = 0
        self.closed = 0
        self.errors: Counter = Counter()
        self.body_buffered = 0               # upload bytes that arrived with the head (copied)
        self.copy_sent = 0                   # bytes the connection send()s itself (heads, small bodies)
        self.copy_received = 0               # bytes the connection recv()s itself (heads, buffered bodies)
        n = len(LATENCY_BOUNDS) + 1
        self.ttfb = Histogram(n)             # request head parsed -> response head handed to the kernel
        self.ttlb = Histogram(n)             # request head parsed -> last response byte handed over
        self.instant = 0                     # replies whose ttfb and ttlb were both 0 (one loop turn)
        self._rates = TransferRates()
        #: Requests per signed-in name (accounts, ``share:<minter>``, a token's Basic user name); anonymous
        #: ones are not counted here. At most ``MAX_USERS`` names, then ``OTHERS`` (any Basic name opens a token).
        self.by_user: dict[str, int] = {}

    def user(self, name: str) -> None:
        """One reply to ``name`` (not ``-``, which the connection does not count)."""
        users = self.by_user
        if name in users:
            users[name] += 1
        elif len(users) < MAX_USERS:
            users[name] = 1
        else:
            users[OTHERS] = users.get(OTHERS, 0) + 1

    @property
    def requests(self) -> int:
        return sum(self.by_class)

    def reply(self, method: str | None, status: int, ttfb: float | None = None,
              ttlb: float | None = None) -> None:
        """One reply ended: counted by status class and method; with a request
        behind it, its time to first byte (its head handed over) and, when it
        completed, to last byte."""
        if ttlb == 0.0:
            self.reply_at_once(method, status)
            return
        self.by_class[status // 100] += 1
        if method is not None:
            self._count_method(method)
        if ttfb is not None:
            self.latency(self.ttfb, ttfb)
        if ttlb is not None:
            self.latency(self.ttlb, ttlb)

    def reply_at_once(self, method: str | None, status: int) -> None:
        """One reply complete in the loop turn that read its request (both latencies 0): most of
        them. Compiled, a C call that bumps two counters for a GET (``reply`` boxes two floats and
        writes the method's dict entry: about 700 instructions more, callgrind)."""
        self.by_class[status // 100] += 1
        if method is not None:
            self._count_method(method)
        self.instant += 1

    def _count_method(self, method: str) -> None:
        if method == "GET":
            self.gets += 1
        else:
            by_method = self.by_method
            by_method[method] = by_method.get(method, 0) + 1

    def methods(self) -> dict[str, int]:
        """Replies by method, GET's count included."""
        methods = dict(self.by_method)
        if self.gets:
            methods["GET"] = self.gets
        return methods

    def latency(self, hist: Histogram, seconds: float) -> None:
        # Most requests are answered in the loop turn that read them: bucket 0, no bisect.
        hist[0 if seconds < _FIRST_BOUND else bisect_left(LATENCY_BOUNDS, seconds)] += 1
        hist.sum += seconds

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def snapshot(self, engines: dict, conns=(), now: float = 0.0) -> dict:
        """Plain data (JSON-ready). ``conns``: the worker's live connections,
        for the in-flight table; ``now``: the worker's monotonic clock."""
        by_engine = {name: {**e.stats.snapshot(), "zero_copy": e.zero_copy} for name, e in engines.items()}
        # no "syscalls" for copy: its sends and recvs are the connection's own, not counted
        by_engine["copy"] = {"bytes_sent": self.copy_sent, "bytes_received": self.copy_received,
                             "zero_copy": False}
        inflight = self._inflight(conns, now)
        ttfb, ttlb = list(self.ttfb), list(self.ttlb)
        ttfb[0] += self.instant
        ttlb[0] += self.instant
        return {
            "kind": "serve",
            "pid": os.getpid(),
            "started": self.started,
            "requests": self.requests,
            "status": {f"{i}xx": n for i, n in enumerate(self.by_class) if i},
            "methods": self.methods(),
            "connections": {"accepted": self.accepted, "closed": self.closed,
                            "active": self.accepted - self.closed},
            "errors": dict(self.errors),
            "body_buffered": self.body_buffered,
            "bytes_sent": sum(e["bytes_sent"] for e in by_engine.values()),
            "bytes_received": sum(e["bytes_received"] for e in by_engine.values()),
            "engines": by_engine,
            "latency": {"bounds": list(LATENCY_BOUNDS), "ttfb": ttfb, "ttlb": ttlb,
                        "ttfb_sum": round(self.ttfb.sum, 6), "ttlb_sum": round(self.ttlb.sum, 6)},
            "inflight": busiest(inflight),
            "inflight_count": len(inflight),
            "users": dict(self.by_user),
        }

    def _inflight(self, conns, now: float) -> list[dict]:
        """Transfers with a body under way: client, path, done/total and the
        rate since the previous snapshot (since the request for a new one)."""
        moving = [(conn, *item) for conn in conns if (item := _progress(conn)) is not None]
        # a download's rate counts what the client took, not what its send queue holds
        rates = self._rates.measure([((c.fd, id(c), c.started), done if c.upload else done - unsent(c.fd),
                                      c.started) for c, _, done, _ in moving], now)
        out = []
        for (conn, path, done, total), rate in zip(moving, rates):
            host, port = conn.addr[:2]
            out.append({"client": f"{host}:{port}", "path": path, "done": done, "total": total,
                        "rate": round(rate, 1), "seconds": round(now - conn.started, 3),
                        "direction": "up" if conn.upload is not None else "down"})
        return out


def _progress(conn) -> tuple[str, int, int] | None:
    """(path, bytes done, bytes total) of a connection moving a body, else None."""
    req = conn.request
    if req is None:
        return None
    up = conn.upload
    if up is not None:
        left = conn.proto.body_left
        total = up.taken + left if left >= 0 else 0   # 0: chunked, unknown
        return req.path, up.taken, total
    reply = conn.reply
    if reply is None or not reply.length:
        return None
    return req.path, conn.sent, reply.length


def server_info(config) -> dict:
    """What a reader shows in its title: the same in every worker's snapshot."""
    host = f"[{config.bind}]" if ":" in config.bind else config.bind
    scheme = "https" if getattr(config, "tls", None) is not None else "http"
    return {"address": f"{scheme}://{host}:{config.port}/", "root": config.root, "workers": config.workers,
            "engine": config.engine, "upload_engine": config.upload_engine}
