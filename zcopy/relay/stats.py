"""Relay counters, the per-connection log, and the snapshot ``zcopy top`` reads.

Byte counts live in the engine's ``EngineStats`` (bumped by the pumps); the
rest is bumped here once per connection, when it ends. A connection's record
is written whatever way it ended, a failed side included, so the bytes that
did move are never lost with it. ``snapshot`` is the only reader; its shape
is documented in docs/relay.md.
"""

from __future__ import annotations

import os
import sys
import time
from collections import Counter, deque

#: Closed connections kept in the snapshot, newest last.
RECENT = 32
#: Live connections listed per worker snapshot (the busiest by rate).
INFLIGHT_MAX = 64
#: Engines that move bytes between the sockets without copying them through user space.
ZERO_COPY = {"splice": True, "copy": False}


class RelayStats:
    __slots__ = ("started", "accepted", "closed", "errors", "ended", "up", "down", "recent", "parked",
                 "_last")

    def __init__(self) -> None:
        self.started = time.time()
        self.accepted = 0
        self.closed = 0
        self.errors: Counter = Counter()   # every ending but "closed", plus accept failures
        self.ended: Counter = Counter()    # every ending, "closed" included
        self.up = 0                        # bytes client -> upstream, closed connections
        self.down = 0                      # bytes upstream -> client, closed connections
        self.recent: deque = deque(maxlen=RECENT)
        self.parked = 0                    # times a direction waited for rate-limit tokens
        self._last: dict = {}              # (id(pump), direction) -> (bytes moved, when): for rates

    def error(self, kind: str) -> None:
        self.errors[kind] += 1

    def connection(self, record: dict) -> None:
        self.closed += 1
        how = record["end"]
        self.ended[how] += 1
        if how != "closed":
            self.errors[how] += 1
        self.up += record["up"]
        self.down += record["down"]
        self.recent.append(record)

    def snapshot(self, engines: dict, pipes: dict | None = None, sessions=(), upstream: str = "",
                 now: float = 0.0) -> dict:
        """``engines``: name -> EngineStats; ``sessions``: the live ones (for
        the in-flight table ``zcopy top`` shows); ``now``: the worker's clock.
        ``bytes_sent``/``bytes_received``, ``engines.*.zero_copy`` and
        ``inflight`` have the meaning and shape they have in serve's snapshot."""
        by_engine = {name: {**s.snapshot(), "zero_copy": ZERO_COPY.get(name, False)}
                     for name, s in engines.items()}
        return {
            "kind": "relay",
            "started": self.started,
            "connections": {"accepted": self.accepted, "active": self.accepted - self.closed,
                            "closed": self.closed},
            "bytes": {"client_to_upstream": self.up, "upstream_to_client": self.down},
            "bytes_sent": sum(e["bytes_sent"] for e in by_engine.values()),
            "bytes_received": sum(e["bytes_received"] for e in by_engine.values()),
            "engines": by_engine,
            "errors": dict(self.errors),
            "ended": dict(self.ended),
            "rate_limit_waits": self.parked,
            "pipes": pipes,
            "recent": list(self.recent),
            "inflight": self._inflight(sessions, upstream, now),
        }

    def _inflight(self, sessions, upstream: str, now: float) -> list[dict]:
        """Each direction of each relaying connection: bytes delivered so far
        and the rate since the previous snapshot (since the connection began
        for a new one). ``up`` is client -> upstream."""
        last, seen, out = self._last, {}, []
        for session in sessions:
            if not session.pumps:
                continue                  # still connecting
            host, port = session.addr[:2]
            client = address(host, port)
            for direction, pump in zip(("up", "down"), session.pumps):
                key = (id(pump), direction)
                prev = last.get(key)
                if prev is not None and prev[0] <= pump.moved and now > prev[1]:
                    rate = (pump.moved - prev[0]) / (now - prev[1])
                else:
                    rate = pump.moved / (now - session.started) if now > session.started else 0.0
                seen[key] = (pump.moved, now)
                out.append({"client": client, "path": upstream, "done": pump.moved, "total": 0,
                            "rate": round(rate, 1), "seconds": round(now - session.started, 3),
                            "direction": direction})
        self._last = seen
        out.sort(key=lambda t: t["rate"], reverse=True)
        return out[:INFLIGHT_MAX]


def address(host: str, port: int) -> str:
    """host:port, [v6]:port."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def record(session, now: float, engine: str, upstream: str) -> dict:
    """What one connection did, as logged and as kept in ``recent``."""
    return {"client": address(*session.addr[:2]), "upstream": upstream, "engine": engine,
            "up": session.sent_up, "down": session.sent_down,
            "duration": round(now - session.started, 6), "end": session.how}


class ConnLog:
    """One line per connection, to a file (O_APPEND, so workers can share
    it) or stderr. Lines are gathered during a loop turn and written with
    one ``write`` at its end."""

    def __init__(self, path: str | None) -> None:
        if path is None or path == "-":
            self.fd, self.own = sys.stderr.fileno(), False
        else:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            self.own = True
        self.lines: list[str] = []

    def log(self, rec: dict) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
        self.lines.append(f"{stamp} relay client={rec['client']} upstream={rec['upstream']} "
                          f"engine={rec['engine']} up={rec['up']} down={rec['down']} "
                          f"duration={rec['duration']:.3f}s end={rec['end']}\n")

    def flush(self) -> None:
        if self.lines:
            data = "".join(self.lines).encode()
            self.lines.clear()
            try:
                while data:
                    data = data[os.write(self.fd, data):]
            except OSError:
                pass   # a closed stderr must not stop the relay

    def close(self) -> None:
        self.flush()
        if self.own:
            os.close(self.fd)
            self.own = False
